//! The simulated fleet: roles with their own tools, resources, hours,
//! principals, leases and sessions, and the agents of each role.

use super::rng::Rng;

/// One tool a role uses.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The action.
    pub action: &'static str,
    /// Relative frequency.
    pub weight: u32,
    /// `sensitivity` (`low`, `medium`, `high`, `critical`).
    pub sensitivity: &'static str,
    /// Resource template: `{}` is replaced by a number below `ids`.
    pub resource: &'static str,
    /// How many distinct resources.
    pub ids: u64,
    /// Typical bytes moved (0: none given).
    pub bytes: u64,
}

/// A role (cohort) and its habits.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    /// The role's name.
    pub name: &'static str,
    /// Its tools.
    pub tools: &'static [Tool],
    /// First and last+1 working hour (UTC); (0, 24) for round the clock.
    pub hours: (u32, u32),
    /// Whether it works on weekends.
    pub weekends: bool,
    /// Sessions an agent starts per working hour.
    pub sessions_per_hour: f64,
    /// Actions per session (min, max).
    pub actions: (u32, u32),
    /// Principals the role serves.
    pub principals: &'static [&'static str],
}

const fn tool(
    action: &'static str,
    weight: u32,
    sensitivity: &'static str,
    resource: &'static str,
    ids: u64,
    bytes: u64,
) -> Tool {
    Tool {
        action,
        weight,
        sensitivity,
        resource,
        ids,
        bytes,
    }
}

/// The roles of the simulated company.
pub const ROLES: &[Role] = &[
    Role {
        name: "hr-assistant",
        tools: &[
            tool(
                "hr.read_employee",
                60,
                "low",
                "hris://employees/E{}",
                2000,
                0,
            ),
            tool(
                "hr.update_employee",
                25,
                "medium",
                "hris://employees/E{}",
                2000,
                0,
            ),
            tool(
                "hr.search_employees",
                15,
                "low",
                "hris://search/q{}",
                400,
                0,
            ),
        ],
        hours: (8, 17),
        weekends: false,
        sessions_per_hour: 1.5,
        actions: (2, 6),
        principals: &[
            "ana@corp.example",
            "ben@corp.example",
            "chloe@corp.example",
            "dev@corp.example",
        ],
    },
    Role {
        name: "sales-copilot",
        tools: &[
            tool("crm.read_account", 40, "low", "crm://accounts/A{}", 5000, 0),
            tool(
                "crm.update_opportunity",
                20,
                "medium",
                "crm://opportunities/O{}",
                3000,
                0,
            ),
            tool("llm.chat", 30, "low", "llm://gpt/chat", 1, 2000),
            tool("email.draft", 10, "low", "mail://drafts/D{}", 9000, 0),
        ],
        hours: (7, 19),
        weekends: false,
        sessions_per_hour: 2.0,
        actions: (2, 8),
        principals: &[
            "eve@corp.example",
            "fay@corp.example",
            "gus@corp.example",
            "hal@corp.example",
            "ivy@corp.example",
        ],
    },
    Role {
        name: "db-analyst",
        tools: &[
            tool(
                "db.query",
                80,
                "medium",
                "db://analytics/table_{}",
                20,
                50_000,
            ),
            tool("db.describe", 20, "low", "db://analytics/table_{}", 20, 0),
        ],
        hours: (8, 20),
        weekends: false,
        sessions_per_hour: 1.0,
        actions: (3, 10),
        principals: &["jon@corp.example", "kim@corp.example"],
    },
    Role {
        name: "support-bot",
        tools: &[
            tool("kb.search", 40, "low", "kb://articles/K{}", 800, 0),
            tool(
                "ticket.reply",
                35,
                "low",
                "zendesk://tickets/T{}",
                90_000,
                0,
            ),
            tool("llm.chat", 25, "low", "llm://gpt/chat", 1, 3000),
        ],
        hours: (0, 24),
        weekends: true,
        sessions_per_hour: 1.5,
        actions: (2, 5),
        principals: &["support-queue@corp.example"],
    },
    Role {
        name: "it-ops",
        tools: &[
            tool("ticket.read", 50, "low", "jira://it/IT-{}", 5000, 0),
            tool(
                "iam.reset_password",
                20,
                "medium",
                "iam://users/U{}",
                3000,
                0,
            ),
            tool(
                "host.restart_service",
                30,
                "medium",
                "host://srv-{}/svc",
                60,
                0,
            ),
        ],
        hours: (0, 24),
        weekends: true,
        sessions_per_hour: 0.8,
        actions: (2, 6),
        principals: &["oncall@corp.example", "lee@corp.example"],
    },
];

/// One simulated agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Its id.
    pub id: String,
    /// Index of its role in [`ROLES`].
    pub role: usize,
    /// Its signing key's seed.
    pub seed: [u8; 32],
    /// The addresses it runs from.
    pub ips: [String; 2],
    /// The principals it serves (a subset of its role's).
    pub principals: Vec<&'static str>,
}

impl Agent {
    /// Its role.
    pub fn role(&self) -> &'static Role {
        &ROLES[self.role]
    }

    /// Its key id.
    pub fn kid(&self) -> String {
        format!("{}#1", self.id)
    }
}

/// `per_role` agents of every role.
pub fn agents(rng: &mut Rng, per_role: usize) -> Vec<Agent> {
    let mut out = Vec::new();
    for (r, role) in ROLES.iter().enumerate() {
        for i in 0..per_role {
            let mut seed = [0u8; 32];
            for b in seed.iter_mut() {
                *b = rng.below(256) as u8;
            }
            let net = out.len() as u64;
            let mut principals: Vec<&'static str> = role.principals.to_vec();
            while principals.len() > 2 {
                principals.remove(rng.below(principals.len() as u64) as usize);
            }
            out.push(Agent {
                id: format!("{}-{}", role.name, i + 1),
                role: r,
                seed,
                ips: [format!("10.{r}.{net}.10"), format!("10.{r}.{net}.11")],
                principals,
            });
        }
    }
    out
}
