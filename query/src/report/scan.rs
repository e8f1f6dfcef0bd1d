//! Reports the rollups cannot answer, as scans of the event store: the plan's columns,
//! filter and metrics turned into a [`ScanQuery`].

use beacon_core::meta::{GoalKind, Tenant};
use beacon_proto::insights::v1::{Dimension, Metric};

use super::Plan;
use super::goals::page_pattern;
use crate::QueryError;
use crate::filter::{Operand, Test, ValueFilter};
use crate::range::Range;
use crate::shard::{Needs, Predicate, ScanColumn, ScanQuery, SortKey, event_column, property_sql};

/// The scan answering `plan` over `range`, its days grouped as if `shift` days later.
pub(super) fn query(
    plan: &Plan,
    tenant: &Tenant,
    range: Range,
    shift: i64,
) -> Result<ScanQuery, QueryError> {
    let columns = plan
        .dimensions()
        .into_iter()
        .map(|dimension| column(dimension, plan.property.as_deref()))
        .collect::<Result<_, _>>()?;
    let operand = |test: &Test| operand(test, tenant);
    let render = |filter: &ValueFilter| {
        let mut params = Vec::new();
        let sql = filter.to_sql(&operand, &mut params)?;
        Ok::<_, QueryError>(Predicate { sql, params })
    };
    let filter = plan.filter.as_deref().map(render).transpose()?;
    let base = if uses(plan, Metric::GroupConversionRate) {
        match plan
            .filter
            .as_deref()
            .and_then(|f| f.without(Dimension::Goal))
        {
            Some(rest) => Some(render(&rest)?),
            None => Some(Predicate {
                sql: "true".to_owned(),
                params: Vec::new(),
            }),
        }
    } else {
        None
    };
    let visit_metrics = [
        Metric::Visits,
        Metric::BounceRate,
        Metric::VisitDuration,
        Metric::ViewsPerVisit,
    ];
    Ok(ScanQuery {
        start: range.start,
        end: range.end,
        shift_days: shift,
        time: plan.time(),
        columns,
        filter,
        base,
        needs: Needs {
            visits: visit_metrics.into_iter().any(|m| uses(plan, m)),
            engagement: uses(plan, Metric::ScrollDepth) || uses(plan, Metric::TimeOnPage),
            point_visitors: uses(plan, Metric::Percentage),
            exit_page: plan.dimensions().contains(&Dimension::ExitPage)
                || plan
                    .filter
                    .as_ref()
                    .is_some_and(|f| f.fields().iter().any(|(d, _)| *d == Dimension::ExitPage)),
        },
    })
}

/// Whether the plan asks for `metric` or sorts by it.
fn uses(plan: &Plan, metric: Metric) -> bool {
    plan.metrics.contains(&metric) || plan.sort.iter().any(|s| s.key == SortKey::Metric(metric))
}

/// The scan column of a report dimension.
fn column(dimension: Dimension, property: Option<&str>) -> Result<ScanColumn, QueryError> {
    match (dimension, property) {
        (Dimension::ExitPage, _) => Ok(ScanColumn::ExitPage),
        (Dimension::Property, Some(key)) => Ok(ScanColumn::Property(key.to_owned())),
        (dimension, _) => event_column(dimension)
            .map(ScanColumn::Stored)
            .ok_or_else(|| {
                QueryError::unimplemented(format!(
                    "{} is not kept in the event store",
                    dimension.as_str_name()
                ))
            }),
    }
}

/// What a filter condition reads in the event store: a column, a property's value, the exit
/// page, or the tenant's goals as predicates.
fn operand(test: &Test, tenant: &Tenant) -> Result<Operand, QueryError> {
    Ok(match test.dimension {
        Dimension::Goal => Operand::Named(
            tenant
                .goals
                .iter()
                .map(|goal| (goal.name.clone(), goal_sql(&goal.kind)))
                .collect(),
        ),
        Dimension::Property => Operand::Value(property_sql(test.property().unwrap_or_default())),
        dimension => Operand::Value(column(dimension, None)?.sql()),
    })
}

/// The SQL predicate of a goal: its event name, or any event on a page its pattern matches.
fn goal_sql(kind: &GoalKind) -> String {
    let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
    match kind {
        GoalKind::EventName(name) => format!("name = {}", literal(name)),
        GoalKind::PagePath(pattern) => {
            format!(
                "regexp_full_match(page, {})",
                literal(&page_pattern(pattern))
            )
        }
    }
}
