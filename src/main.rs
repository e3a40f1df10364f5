//! The `vigil` command: parses arguments and maps the outcome to an exit
//! status (0 valid, 1 not valid, 2 usage or operating-system error).

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
