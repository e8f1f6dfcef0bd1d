//! Goals: what a tenant counts as a conversion.

use crate::{Error, Result};

/// Most goals of one tenant.
pub const MAX_GOALS: usize = 100;
/// Longest goal name and event name, bytes.
pub const MAX_NAME_BYTES: usize = 120;
/// Longest page path pattern, bytes.
pub const MAX_PATTERN_BYTES: usize = 256;

/// A goal: a name and what converts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Goal {
    /// Display name, unique within the tenant.
    pub name: String,
    /// What converts.
    pub kind: GoalKind,
}

/// What converts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GoalKind {
    /// Events with this name.
    EventName(String),
    /// Events on pages whose path matches this pattern: `*` is any characters but `/`, `**`
    /// any.
    PagePath(String),
}

/// Checks a tenant's goals: at most [`MAX_GOALS`], names 1 to [`MAX_NAME_BYTES`] bytes and
/// unique, event names 1 to [`MAX_NAME_BYTES`] bytes, patterns 1 to [`MAX_PATTERN_BYTES`]
/// bytes starting with `/`. Errors name the field.
pub fn validate(goals: &[Goal]) -> Result<()> {
    if goals.len() > MAX_GOALS {
        return Err(Error::InvalidArgument(format!(
            "goals: {} goals, the limit is {MAX_GOALS}",
            goals.len()
        )));
    }
    for (i, goal) in goals.iter().enumerate() {
        let field = format!("goals[{i}]");
        let sized = |what: &str, value: &str, most: usize| {
            if value.trim().is_empty() || value.len() > most {
                Err(Error::InvalidArgument(format!(
                    "{field}.{what}: {} bytes, must be 1 to {most} and not blank",
                    value.len()
                )))
            } else {
                Ok(())
            }
        };
        sized("name", &goal.name, MAX_NAME_BYTES)?;
        if goals[..i].iter().any(|g| g.name == goal.name) {
            return Err(Error::InvalidArgument(format!(
                "{field}.name: {:?} is the name of an earlier goal",
                goal.name
            )));
        }
        match &goal.kind {
            GoalKind::EventName(name) => sized("event_name", name, MAX_NAME_BYTES)?,
            GoalKind::PagePath(pattern) => {
                sized("page_path", pattern, MAX_PATTERN_BYTES)?;
                if !pattern.starts_with('/') {
                    return Err(Error::InvalidArgument(format!(
                        "{field}.page_path: {pattern:?} must start with \"/\""
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(name: &str, kind: GoalKind) -> Goal {
        Goal {
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn refuses_bad_goals_naming_the_field() {
        let ok = goal("Signup", GoalKind::EventName("signup".into()));
        assert!(validate(std::slice::from_ref(&ok)).is_ok());
        let err = |goals: &[Goal]| validate(goals).expect_err("invalid").to_string();
        assert!(err(&[ok.clone(), ok.clone()]).contains("goals[1].name: \"Signup\" is the name"));
        assert!(err(&[goal(" ", GoalKind::EventName("x".into()))]).contains("goals[0].name"));
        assert!(
            err(&[goal("Docs", GoalKind::PagePath("docs/*".into()))])
                .contains("goals[0].page_path: \"docs/*\" must start with \"/\"")
        );
        let many: Vec<Goal> = (0..=MAX_GOALS)
            .map(|i| goal(&format!("g{i}"), GoalKind::EventName("x".into())))
            .collect();
        assert!(err(&many).contains("101 goals, the limit is 100"));
    }
}
