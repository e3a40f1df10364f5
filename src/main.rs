//! The `vigil` command: parses arguments and maps the outcome to an exit
//! status (0 valid, 1 not valid, 2 usage or operating-system error).

// Ingest allocates many short-lived buffers on several threads at once;
// mimalloc handles that with less contention than the system allocator
// (measured with `vigil bench ingest`, see the README). It is built
// without transparent huge pages (`no_thp`): memory it purged and used
// again was faulted back 2 MiB at a time, and zeroing those pages took
// 5-7% of the server's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
