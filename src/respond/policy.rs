//! The response policy: which anomalies lead to which response.
//!
//! Rules are tried in order and the first that matches decides. Every
//! condition a rule names must hold; a rule naming none matches every
//! anomaly. Without `[[response.rules]]` the contract's default policy
//! applies (section 9): `critical`, or an expired lease, revokes; `high`
//! with a principal asks that principal to step up (when `[ciba]` is set).
//!
//! Whatever the rules say, an anomaly made only of rejected events never
//! leads to a response: a forger must not be able to get a victim revoked.

use serde::{Deserialize, Serialize};

/// What a response does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing (the anomaly is shown, not acted on).
    None,
    /// Ask the principal to approve on their own device (CIBA).
    StepUp,
    /// Revoke the agent's leases and suspend it.
    Revoke,
}

impl Action {
    /// The contract's name (`none`, `step_up`, `revoke`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::StepUp => "step_up",
            Action::Revoke => "revoke",
        }
    }
}

/// Severities in order.
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

fn severity_rank(s: &str) -> Option<usize> {
    SEVERITIES.iter().position(|x| *x == s)
}

/// One `[[response.rules]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The anomaly scores at least this.
    pub min_score: Option<u8>,
    /// The anomaly's severity is at least this (`low` ... `critical`).
    pub min_severity: Option<String>,
    /// The anomaly has at least one of these kinds.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The agent's role is one of these.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The triggering event's action is one of these.
    #[serde(default)]
    pub actions: Vec<String>,
    /// The triggering event names a principal (`true`) or does not (`false`).
    pub principal: Option<bool>,
    /// What to do.
    pub then: Option<Action>,
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The anomaly's score.
    pub score: u8,
    /// Its severity.
    pub severity: &'a str,
    /// Its kinds.
    pub kinds: &'a [String],
    /// The agent's role, if known.
    pub role: Option<&'a str>,
    /// The triggering event's action, if known.
    pub action: Option<&'a str>,
    /// Whether the anomaly names a principal.
    pub has_principal: bool,
}

impl Rule {
    fn matches(&self, s: &Subject<'_>) -> bool {
        let in_list = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        self.min_score.is_none_or(|m| s.score >= m)
            && self.min_severity.as_deref().is_none_or(|m| {
                severity_rank(s.severity).unwrap_or(0) >= severity_rank(m).unwrap_or(0)
            })
            && (self.kinds.is_empty() || s.kinds.iter().any(|k| self.kinds.contains(k)))
            && in_list(&self.roles, s.role)
            && in_list(&self.actions, s.action)
            && self.principal.is_none_or(|p| p == s.has_principal)
    }
}

/// The rules in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Whether the rules are the contract's default.
    pub is_default: bool,
}

/// The decision for one anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Why, for the evidence (`"rule 2 (min_severity high)"`).
    pub why: String,
}

/// Why a policy is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("[[response.rules]] entry {number}: {what}")]
pub struct PolicyError {
    /// Which rule, from 1.
    pub number: usize,
    /// What is wrong and how to fix it.
    pub what: String,
}

impl Policy {
    /// The contract's default policy; `step_up` only when a CIBA provider
    /// is configured.
    pub fn default_for(ciba: bool) -> Policy {
        let rule = |min_severity: Option<&str>, kinds: &[&str], principal, then| Rule {
            min_severity: min_severity.map(str::to_string),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            principal,
            then: Some(then),
            ..Rule::default()
        };
        let mut rules = vec![
            rule(None, &["expired_lease"], None, Action::Revoke),
            rule(Some("critical"), &[], None, Action::Revoke),
        ];
        if ciba {
            rules.push(rule(Some("high"), &[], Some(true), Action::StepUp));
        }
        Policy {
            rules,
            is_default: true,
        }
    }

    /// Checks configured rules: each names `then`, severities and scores
    /// are in range, and `step_up` has a provider to ask.
    pub fn from_rules(rules: Vec<Rule>, ciba: bool) -> Result<Policy, PolicyError> {
        for (i, r) in rules.iter().enumerate() {
            let fail = |what: String| {
                Err(PolicyError {
                    number: i + 1,
                    what,
                })
            };
            match r.then {
                None => return fail("`then` is missing; set it to \"none\", \"step_up\" or \"revoke\"".into()),
                Some(Action::StepUp) if !ciba => {
                    return fail("`then = \"step_up\"` needs an OpenID provider; add a [ciba] table or choose \"revoke\" or \"none\"".into())
                }
                _ => {}
            }
            if let Some(s) = &r.min_severity {
                if severity_rank(s).is_none() {
                    return fail(format!(
                        "min_severity {s:?} is not one of low, medium, high, critical"
                    ));
                }
            }
            if r.min_score.is_some_and(|m| m > 100) {
                return fail("min_score must be from 0 to 100".into());
            }
            if r.kinds
                .iter()
                .chain(&r.roles)
                .chain(&r.actions)
                .any(String::is_empty)
            {
                return fail("kinds, roles and actions cannot hold an empty name".into());
            }
        }
        Ok(Policy {
            rules,
            is_default: false,
        })
    }

    /// Decides for one anomaly. `from_rejected` anomalies never get a
    /// response.
    pub fn decide(&self, s: &Subject<'_>, from_rejected: bool) -> Decision {
        if from_rejected {
            return Decision {
                action: Action::None,
                why: "made only of rejected events, which never justify a response".into(),
            };
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(s) {
                let origin = if self.is_default {
                    "default rule"
                } else {
                    "rule"
                };
                return Decision {
                    action: r.then.unwrap_or(Action::None),
                    why: format!("{origin} {}", i + 1),
                };
            }
        }
        Decision {
            action: Action::None,
            why: "no rule matched".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(severity: &'a str, kinds: &'a [String], principal: bool) -> Subject<'a> {
        Subject {
            score: 70,
            severity,
            kinds,
            role: Some("hr-assistant"),
            action: Some("hr.offboard_employee"),
            has_principal: principal,
        }
    }

    #[test]
    fn the_default_policy_is_the_contracts() {
        let p = Policy::default_for(true);
        let none: Vec<String> = vec![];
        let expired = vec!["expired_lease".to_string()];
        assert_eq!(
            p.decide(&subject("high", &none, true), false).action,
            Action::StepUp
        );
        assert_eq!(
            p.decide(&subject("high", &none, false), false).action,
            Action::None
        );
        assert_eq!(
            p.decide(&subject("critical", &none, true), false).action,
            Action::Revoke
        );
        assert_eq!(
            p.decide(&subject("medium", &expired, true), false).action,
            Action::Revoke
        );
        assert_eq!(
            p.decide(&subject("medium", &none, true), false).action,
            Action::None
        );
        // Without a provider there is no step-up.
        let p = Policy::default_for(false);
        assert_eq!(
            p.decide(&subject("high", &none, true), false).action,
            Action::None
        );
    }

    #[test]
    fn rejected_events_never_lead_to_a_response() {
        let p = Policy::from_rules(
            vec![Rule {
                then: Some(Action::Revoke),
                ..Rule::default()
            }],
            false,
        )
        .unwrap();
        let kinds = vec!["forged_events".to_string()];
        assert_eq!(
            p.decide(&subject("critical", &kinds, true), true).action,
            Action::None
        );
        assert_eq!(
            p.decide(&subject("low", &kinds, true), false).action,
            Action::Revoke
        );
    }

    #[test]
    fn configured_rules_match_every_condition_in_order() {
        let rules: Vec<Rule> = toml::from_str::<toml::Table>(
            r#"
            [[r]]
            roles = ["hr-assistant"]
            actions = ["hr.offboard_employee"]
            min_score = 60
            then = "revoke"
            [[r]]
            min_severity = "medium"
            then = "step_up"
            "#,
        )
        .unwrap()["r"]
            .clone()
            .try_into()
            .unwrap();
        let p = Policy::from_rules(rules, true).unwrap();
        let none: Vec<String> = vec![];
        let s = subject("high", &none, true);
        assert_eq!(
            p.decide(&s, false),
            Decision {
                action: Action::Revoke,
                why: "rule 1".into()
            }
        );
        let other = Subject {
            action: Some("hr.read_employee"),
            ..s
        };
        assert_eq!(p.decide(&other, false).action, Action::StepUp);
        let low = Subject {
            severity: "low",
            ..other
        };
        assert_eq!(p.decide(&low, false).action, Action::None);
    }

    #[test]
    fn bad_rules_say_what_to_fix() {
        let err = |r: Rule, ciba| Policy::from_rules(vec![r], ciba).unwrap_err().to_string();
        assert!(err(Rule::default(), true).contains("`then` is missing"));
        let step_up = Rule {
            then: Some(Action::StepUp),
            ..Rule::default()
        };
        assert!(err(step_up, false).contains("add a [ciba] table"));
        let bad = Rule {
            min_severity: Some("severe".into()),
            then: Some(Action::None),
            ..Rule::default()
        };
        assert!(err(bad, true).contains("\"severe\" is not one of"));
    }
}
