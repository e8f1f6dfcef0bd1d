//! Checks a tenant's rollup before it reaches DuckDB, and derives the typed keys of its rows.

use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::TenantRollup;
use jiff::civil::Date;

use super::Refused;
use super::writes::Written;
use crate::QueryError;

const EPOCH: Date = Date::constant(1970, 1, 1);
/// One minute, milliseconds: the realtime view's rows start at whole minutes.
const MINUTE_MS: i64 = 60_000;

/// The DuckDB keys of a rollup's rows, index-aligned with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    /// (days since 1970-01-01, dimension) of each row.
    pub rows: Vec<(i32, i16)>,
    /// (day of the event, day of its visit), since 1970-01-01, of each event row.
    pub events: Vec<(i32, i32)>,
}

/// A tenant's rollup that passed [`validate`], with the typed keys of its rows.
#[derive(Debug, Clone)]
pub struct ValidRollup {
    pub(crate) rollup: TenantRollup,
    pub(crate) keys: Keys,
    /// The part's index in its rollup batch (names it in dead letters).
    pub(crate) index: u32,
}

impl ValidRollup {
    /// The tenant the rollup belongs to.
    pub fn tenant_id(&self) -> &str {
        &self.rollup.tenant_id
    }

    /// The first local day (days since 1970-01-01) whose live rows applying the part may
    /// change: its rows', its events' and their visits' days; [`Written::ANY_DAY`] for a swap,
    /// which makes every staged row of its generation live whatever its date;
    /// [`Written::NO_DAY`] when it changes no live day (realtime minutes only, or a staged
    /// part, which reads never see).
    pub(crate) fn first_day(&self) -> i32 {
        if self.rollup.swap.is_some() {
            return Written::ANY_DAY;
        }
        if self.rollup.generation != 0 {
            return Written::NO_DAY;
        }
        let rows = self.keys.rows.iter().map(|(day, _)| *day);
        let events = self.keys.events.iter().map(|(day, visit)| *day.min(visit));
        rows.chain(events).min().unwrap_or(Written::NO_DAY)
    }
}

/// Validates `rollup`: a well-formed tenant id, known dimensions and "YYYY-MM-DD" dates.
pub(crate) fn validate(rollup: TenantRollup) -> Result<ValidRollup, Box<Refused>> {
    let keys = match keys(&rollup) {
        Ok(keys) => keys,
        Err(error) => return Err(Box::new(Refused { error, rollup })),
    };
    Ok(ValidRollup {
        rollup,
        keys,
        index: 0,
    })
}

fn keys(rollup: &TenantRollup) -> Result<Keys, QueryError> {
    let tenant = &rollup.tenant_id;
    beacon_core::auth::validate_tenant_id(tenant)
        .map_err(|err| QueryError::InvalidRollup(format!("tenant_id: {err}")))?;
    let key = |field: &str, index: usize, date: &str, dimension: i32| {
        let day = epoch_day(date).map_err(|why| {
            QueryError::InvalidRollup(format!(
                "tenant {tenant:?} {field}[{index}].local_date {date:?}: {why}"
            ))
        })?;
        let dimension = dimension_code(dimension).ok_or_else(|| {
            QueryError::InvalidRollup(format!(
                "tenant {tenant:?} {field}[{index}].dimension {dimension} is not a known Dimension"
            ))
        })?;
        Ok::<_, QueryError>((day, dimension))
    };
    let rows = rollup
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| key("rows", i, &row.local_date, row.dimension))
        .collect::<Result<_, _>>()?;
    for (i, row) in rollup.recent.iter().enumerate() {
        let view = [0, Dimension::Page as i32, Dimension::Source as i32];
        if !view.contains(&row.dimension) {
            return Err(QueryError::InvalidRollup(format!(
                "tenant {tenant:?} recent[{i}].dimension {} is not 0, DIMENSION_PAGE or \
                 DIMENSION_SOURCE",
                row.dimension
            )));
        }
        if row.hour_ms.rem_euclid(MINUTE_MS) != 0 {
            return Err(QueryError::InvalidRollup(format!(
                "tenant {tenant:?} recent[{i}].hour_ms {} is not the start of a minute",
                row.hour_ms
            )));
        }
    }
    let events = rollup
        .events
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let invalid = |why: String| {
                QueryError::InvalidRollup(format!("tenant {tenant:?} events[{i}]{why}"))
            };
            let day = |field: &str, date: &str| {
                epoch_day(date).map_err(|why| invalid(format!(".{field} {date:?}: {why}")))
            };
            super::events::check(row).map_err(|why| invalid(format!(": {why}")))?;
            Ok((
                day("local_date", &row.local_date)?,
                day("visit_date", &row.visit_date)?,
            ))
        })
        .collect::<Result<_, QueryError>>()?;
    check_generation(rollup)?;
    Ok(Keys { rows, events })
}

/// Swaps and drops name a staged generation, and a swap names valid dates in order.
fn check_generation(rollup: &TenantRollup) -> Result<(), QueryError> {
    let tenant = &rollup.tenant_id;
    let invalid = |why: String| QueryError::InvalidRollup(format!("tenant {tenant:?} {why}"));
    if rollup.generation == 0 && (rollup.swap.is_some() || rollup.drop || rollup.stage > 0) {
        return Err(invalid(
            "generation is 0 (live) but the part stages, swaps or drops a generation".into(),
        ));
    }
    if let Some(swap) = &rollup.swap {
        let first = epoch_day(&swap.first_date)
            .map_err(|why| invalid(format!("swap.first_date {:?}: {why}", swap.first_date)))?;
        let last = epoch_day(&swap.last_date)
            .map_err(|why| invalid(format!("swap.last_date {:?}: {why}", swap.last_date)))?;
        if first > last {
            return Err(invalid(format!(
                "swap.first_date {:?} is after swap.last_date {:?}",
                swap.first_date, swap.last_date
            )));
        }
    }
    Ok(())
}

fn epoch_day(text: &str) -> Result<i32, String> {
    let date: Date = text
        .parse()
        .map_err(|err| format!("is not a YYYY-MM-DD date: {err}"))?;
    let days = date.duration_since(EPOCH).as_secs() / 86_400;
    i32::try_from(days).map_err(|_| "is out of range".to_owned())
}

fn dimension_code(raw: i32) -> Option<i16> {
    Dimension::try_from(raw)
        .ok()
        .and_then(|d| i16::try_from(d as i32).ok())
}

#[cfg(test)]
mod tests {
    use beacon_proto::pipeline::v1::RollupRow;

    use super::*;

    fn rollup(tenant: &str, date: &str, dimension: i32) -> TenantRollup {
        TenantRollup {
            tenant_id: tenant.into(),
            rows: vec![
                RollupRow {
                    local_date: date.into(),
                    dimension,
                    ..Default::default()
                },
                RollupRow {
                    local_date: "1970-01-02".into(),
                    dimension: Dimension::Page as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_part_changes_live_days_from_its_first_unless_staged_and_any_when_swapped() {
        let mut live = rollup("acme", "2026-03-01", Dimension::Country as i32);
        assert_eq!(validate(live.clone()).expect("valid").first_day(), 1);
        live.rows.clear();
        assert_eq!(
            validate(live.clone()).expect("valid").first_day(),
            Written::NO_DAY
        );
        let staged = TenantRollup {
            generation: 7,
            stage: 1,
            ..rollup("acme", "2026-03-01", 0)
        };
        assert_eq!(
            validate(staged.clone()).expect("valid").first_day(),
            Written::NO_DAY
        );
        let swap = TenantRollup {
            swap: Some(beacon_proto::pipeline::v1::Swap {
                first_date: "2026-03-01".into(),
                last_date: "2026-03-02".into(),
                ..Default::default()
            }),
            ..staged
        };
        assert_eq!(validate(swap).expect("valid").first_day(), Written::ANY_DAY);
    }

    #[test]
    fn derives_epoch_days_and_dimensions() {
        let keys = validate(rollup("acme", "2026-03-01", Dimension::Country as i32))
            .expect("valid")
            .keys;
        assert_eq!(keys.rows, vec![(20_513, 4), (1, 1)]);
    }

    #[test]
    fn rejects_bad_input_naming_it() {
        let err = validate(rollup("../etc", "2026-03-01", 0))
            .expect_err("tenant")
            .error;
        assert!(err.to_string().contains("tenant_id"), "{err}");
        let err = validate(rollup("acme", "2026-02-30", 0))
            .expect_err("date")
            .error;
        assert!(
            err.to_string()
                .contains("rows[0].local_date \"2026-02-30\""),
            "{err}"
        );
        let err = validate(rollup("acme", "2026-02-03", 99))
            .expect_err("dimension")
            .error;
        assert!(err.to_string().contains("rows[0].dimension 99"), "{err}");
    }
}
