//! Report filters: a request's tree of conditions, validated and compiled into a predicate
//! over dimension values.

use std::collections::{BTreeSet, HashSet};

use beacon_proto::insights::v1::{Condition, Dimension, Filter, Operator, filter};
use regex::RegexSet;

use crate::QueryError;

/// Deepest filter tree (a lone condition is depth 1).
pub const MAX_DEPTH: usize = 5;
/// Most conditions in one filter tree.
pub const MAX_CONDITIONS: usize = 20;
/// Most values in one condition.
pub const MAX_VALUES: usize = 100;
/// Longest value of an `is`, `is not` or `contains` condition, bytes (dimension values are
/// cut to this length).
pub const MAX_VALUE_BYTES: usize = 256;
/// Longest regular expression, bytes.
pub const MAX_PATTERN_BYTES: usize = 1_000;
/// Most memory one compiled regular expression set may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled filter tree over the values of its dimensions.
#[derive(Debug, Clone)]
pub enum ValueFilter {
    /// A leaf.
    Condition(Test),
    /// Every child holds.
    All(Vec<ValueFilter>),
    /// At least one child holds.
    Any(Vec<ValueFilter>),
    /// No child holds.
    NoneOf(Vec<ValueFilter>),
}

/// What a condition reads: a dimension, and for custom properties the key (else empty).
pub type Field = (Dimension, String);

/// One compiled condition.
#[derive(Debug, Clone)]
pub struct Test {
    /// The dimension it reads.
    pub dimension: Dimension,
    /// For [`Dimension::Property`], the key as rows keep it: the condition reads the value of
    /// rows of that key, and rows of other keys are as if the property were missing.
    property: Option<String>,
    matcher: Matcher,
    negated: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Equal to one of the values (lowercased when `ignore_case`).
    Is {
        values: HashSet<String>,
        ignore_case: bool,
    },
    /// Contains one of the values (lowercased when `ignore_case`).
    Contains {
        values: Vec<String>,
        ignore_case: bool,
    },
    /// Matches one of the patterns.
    Matches { set: RegexSet, ignore_case: bool },
    /// Any value (a property key alone).
    Any,
}

impl ValueFilter {
    /// Validates and compiles a request's filter; `field` names it in errors.
    pub fn compile(filter: &Filter, field: &str) -> Result<Self, QueryError> {
        let mut conditions = 0;
        compile(filter, field, 1, &mut conditions)
    }

    /// A filter keeping the rows of the custom property `key`, whatever their value.
    pub fn property(key: &str) -> Self {
        Self::Condition(Test {
            dimension: Dimension::Property,
            property: Some(beacon_core::property::row_key(key)),
            matcher: Matcher::Any,
            negated: false,
        })
    }

    /// A filter keeping exactly `values` of `dimension` (an `is` condition; property rows by
    /// their whole value, key included).
    pub fn one_of(dimension: Dimension, values: impl IntoIterator<Item = String>) -> Self {
        Self::Condition(Test {
            dimension,
            property: None,
            matcher: Matcher::Is {
                values: values.into_iter().collect(),
                ignore_case: false,
            },
            negated: false,
        })
    }

    /// A filter keeping the values of `dimension` that `pattern` (a regular expression)
    /// matches; `field` names where the pattern came from in errors.
    pub fn matching(dimension: Dimension, pattern: &str, field: &str) -> Result<Self, QueryError> {
        Ok(Self::Condition(Test {
            dimension,
            property: None,
            matcher: Matcher::Matches {
                set: patterns(&[pattern.to_owned()], false, field)?,
                ignore_case: false,
            },
            negated: false,
        }))
    }

    /// The fields its conditions read, ascending.
    pub fn fields(&self) -> BTreeSet<Field> {
        let mut out = BTreeSet::new();
        self.visit(&mut |test| {
            out.insert((test.dimension, test.property.clone().unwrap_or_default()));
        });
        out
    }

    /// Whether a row whose dimension has `value` passes. Every condition is taken to read
    /// that one value: use it on filters of one dimension.
    pub fn accepts(&self, value: &str) -> bool {
        self.eval(&|test| test.accepts(value))
    }

    /// Whether an event or visit without any value for the dimension (a visit without UTM
    /// parameters) passes.
    pub fn accepts_missing(&self) -> bool {
        self.eval(&|test| test.negated)
    }

    fn eval(&self, leaf: &impl Fn(&Test) -> bool) -> bool {
        match self {
            Self::Condition(test) => leaf(test),
            Self::All(children) => children.iter().all(|c| c.eval(leaf)),
            Self::Any(children) => children.iter().any(|c| c.eval(leaf)),
            Self::NoneOf(children) => !children.iter().any(|c| c.eval(leaf)),
        }
    }

    fn visit(&self, f: &mut impl FnMut(&Test)) {
        match self {
            Self::Condition(test) => f(test),
            Self::All(children) | Self::Any(children) | Self::NoneOf(children) => {
                children.iter().for_each(|c| c.visit(f));
            }
        }
    }
}

impl Test {
    /// The custom property key it reads, as rows keep it.
    pub fn property(&self) -> Option<&str> {
        self.property.as_deref()
    }

    /// Whether `value` matches the condition's values, before any negation.
    pub fn found(&self, value: &str) -> bool {
        let lower = |ignore_case: bool| {
            if ignore_case {
                std::borrow::Cow::Owned(value.to_lowercase())
            } else {
                std::borrow::Cow::Borrowed(value)
            }
        };
        match &self.matcher {
            Matcher::Is {
                values,
                ignore_case,
            } => values.contains(lower(*ignore_case).as_ref()),
            Matcher::Contains {
                values,
                ignore_case,
            } => {
                let value = lower(*ignore_case);
                values.iter().any(|v| value.contains(v.as_str()))
            }
            Matcher::Matches { set, .. } => set.is_match(value),
            Matcher::Any => true,
        }
    }

    fn accepts(&self, row_value: &str) -> bool {
        let value = match &self.property {
            None => row_value,
            Some(key) => match beacon_core::property::split(row_value) {
                Some((row_key, value)) if row_key == key => value,
                _ => return self.negated,
            },
        };
        self.found(value) != self.negated
    }

    /// The SQL predicate of [`Test::found`] over the expression `operand` (NULL when the
    /// event has no value), its values pushed to `params`.
    fn found_sql(&self, operand: &str, params: &mut Vec<String>) -> String {
        let folded = |ignore_case: bool| {
            if ignore_case {
                format!("lower({operand})")
            } else {
                operand.to_owned()
            }
        };
        let mut any = |values: &mut dyn Iterator<Item = &String>, each: &dyn Fn() -> String| {
            let tests: Vec<String> = values
                .map(|value| {
                    params.push(value.clone());
                    each()
                })
                .collect();
            format!("({})", tests.join(" OR "))
        };
        match &self.matcher {
            Matcher::Is {
                values,
                ignore_case,
            } => {
                // Sorted, so that the same filter is the same statement.
                let mut sorted: Vec<&String> = values.iter().collect();
                sorted.sort();
                let value = folded(*ignore_case);
                any(&mut sorted.into_iter(), &|| format!("{value} = ?"))
            }
            Matcher::Contains {
                values,
                ignore_case,
            } => {
                let value = folded(*ignore_case);
                any(&mut values.iter(), &|| format!("contains({value}, ?)"))
            }
            Matcher::Matches { set, ignore_case } => {
                let flags = if *ignore_case { ", 'i'" } else { "" };
                any(&mut set.patterns().iter(), &|| {
                    format!("regexp_matches({operand}, ?{flags})")
                })
            }
            Matcher::Any => format!("({operand} IS NOT NULL)"),
        }
    }
}

/// What a condition reads in the event store.
#[derive(Debug, Clone)]
pub enum Operand {
    /// An SQL expression of its value, NULL when the event has none.
    Value(String),
    /// SQL predicates of named sets of events (goals): the condition holds for an event when
    /// the predicate of a name it matches does.
    Named(Vec<(String, String)>),
}

impl ValueFilter {
    /// The filter as an SQL predicate over the event store, with its parameters pushed to
    /// `params` in order: `operand` says what each condition reads. An event without a value
    /// passes a negated condition and fails the others, as with [`ValueFilter::accepts_missing`].
    pub fn to_sql(
        &self,
        operand: &dyn Fn(&Test) -> Result<Operand, QueryError>,
        params: &mut Vec<String>,
    ) -> Result<String, QueryError> {
        let join = |children: &[ValueFilter], op: &str, params: &mut Vec<String>| {
            let parts = children
                .iter()
                .map(|c| c.to_sql(operand, params))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, QueryError>(format!("({})", parts.join(op)))
        };
        Ok(match self {
            Self::Condition(test) => {
                let found = match operand(test)? {
                    Operand::Value(expr) => {
                        format!("coalesce({}, false)", test.found_sql(&expr, params))
                    }
                    Operand::Named(named) => {
                        let kept: Vec<&str> = named
                            .iter()
                            .filter(|(name, _)| test.found(name))
                            .map(|(_, predicate)| predicate.as_str())
                            .collect();
                        if kept.is_empty() {
                            "false".to_owned()
                        } else {
                            format!("coalesce(({}), false)", kept.join(" OR "))
                        }
                    }
                };
                if test.negated {
                    format!("(NOT {found})")
                } else {
                    found
                }
            }
            Self::All(children) => join(children, " AND ", params)?,
            Self::Any(children) => join(children, " OR ", params)?,
            Self::NoneOf(children) => format!("(NOT {})", join(children, " OR ", params)?),
        })
    }

    /// The conditions at the top of the tree that every passing event must meet: the filter
    /// itself when it is a condition, the children of an all_of node that are.
    pub fn required(&self) -> Vec<&Test> {
        match self {
            Self::Condition(test) => vec![test],
            Self::All(children) => children
                .iter()
                .filter_map(|c| match c {
                    Self::Condition(test) => Some(test),
                    _ => None,
                })
                .collect(),
            Self::Any(_) | Self::NoneOf(_) => Vec::new(),
        }
    }

    /// The filter without the top-level conditions on `dimension` ([`ValueFilter::required`]);
    /// `None` when nothing is left.
    pub fn without(&self, dimension: Dimension) -> Option<ValueFilter> {
        match self {
            Self::Condition(test) if test.dimension == dimension => None,
            Self::All(children) => {
                let kept: Vec<ValueFilter> = children
                    .iter()
                    .filter(|c| !matches!(c, Self::Condition(t) if t.dimension == dimension))
                    .cloned()
                    .collect();
                (!kept.is_empty()).then_some(Self::All(kept))
            }
            other => Some(other.clone()),
        }
    }
}

impl Test {
    /// Whether it is an `is` condition (not negated, exact values).
    pub fn is_exact(&self) -> bool {
        !self.negated && matches!(self.matcher, Matcher::Is { .. })
    }
}

fn compile(
    filter: &Filter,
    field: &str,
    depth: usize,
    conditions: &mut usize,
) -> Result<ValueFilter, QueryError> {
    if depth > MAX_DEPTH {
        return Err(QueryError::invalid(format!(
            "{field} is nested {depth} levels deep; at most {MAX_DEPTH} are allowed"
        )));
    }
    let children = |list: &beacon_proto::insights::v1::Filters,
                    name: &str,
                    conditions: &mut usize|
     -> Result<Vec<ValueFilter>, QueryError> {
        if list.filters.is_empty() {
            return Err(QueryError::invalid(format!(
                "{field}.{name} is empty; give at least one filter"
            )));
        }
        list.filters
            .iter()
            .enumerate()
            .map(|(i, child)| {
                compile(
                    child,
                    &format!("{field}.{name}.filters[{i}]"),
                    depth + 1,
                    conditions,
                )
            })
            .collect()
    };
    match &filter.kind {
        None => Err(QueryError::invalid(format!(
            "{field} is empty: set condition, all_of, any_of or none_of"
        ))),
        Some(filter::Kind::Condition(condition)) => {
            *conditions += 1;
            if *conditions > MAX_CONDITIONS {
                return Err(QueryError::invalid(format!(
                    "{field}: the filter has more than {MAX_CONDITIONS} conditions"
                )));
            }
            Ok(ValueFilter::Condition(test(
                condition,
                &format!("{field}.condition"),
            )?))
        }
        Some(filter::Kind::AllOf(list)) => {
            Ok(ValueFilter::All(children(list, "all_of", conditions)?))
        }
        Some(filter::Kind::AnyOf(list)) => {
            Ok(ValueFilter::Any(children(list, "any_of", conditions)?))
        }
        Some(filter::Kind::NoneOf(list)) => {
            Ok(ValueFilter::NoneOf(children(list, "none_of", conditions)?))
        }
    }
}

/// The dimension `raw` of the request field `field`: a known one, not unspecified.
pub fn dimension(raw: i32, field: &str) -> Result<Dimension, QueryError> {
    Dimension::try_from(raw)
        .ok()
        .filter(|d| *d != Dimension::Unspecified)
        .ok_or_else(|| {
            let (first, last) = (Dimension::Page, Dimension::ExitPage);
            QueryError::invalid(format!(
                "{field} {raw} is not a dimension: use {} ({}) to {} ({})",
                first.as_str_name(),
                first as i32,
                last.as_str_name(),
                last as i32
            ))
        })
}

fn test(condition: &Condition, field: &str) -> Result<Test, QueryError> {
    let dimension = dimension(condition.dimension, &format!("{field}.dimension"))?;
    let property = match (dimension, condition.property.as_str()) {
        (Dimension::Property, "") => {
            return Err(QueryError::invalid(format!(
                "{field}.property: the custom property key is required with DIMENSION_PROPERTY"
            )));
        }
        (Dimension::Property, key) => Some(beacon_core::property::row_key(key)),
        (_, "") => None,
        (_, _) => {
            return Err(QueryError::invalid(format!(
                "{field}.property is only for DIMENSION_PROPERTY"
            )));
        }
    };
    let operator = Operator::try_from(condition.operator)
        .ok()
        .filter(|op| *op != Operator::Unspecified)
        .ok_or_else(|| {
            QueryError::invalid(format!(
                "{field}.operator {} is not an operator: use OPERATOR_IS (1) to \
                 OPERATOR_MATCHES (4)",
                condition.operator
            ))
        })?;
    let values = &condition.values;
    if values.is_empty() || values.len() > MAX_VALUES {
        return Err(QueryError::invalid(format!(
            "{field}.values has {} values; give 1 to {MAX_VALUES}",
            values.len()
        )));
    }
    let most = if operator == Operator::Matches {
        MAX_PATTERN_BYTES
    } else {
        MAX_VALUE_BYTES
    };
    if let Some((i, value)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| v.is_empty() || v.len() > most)
    {
        return Err(QueryError::invalid(format!(
            "{field}.values[{i}] is {} bytes; 1 to {most} are allowed",
            value.len()
        )));
    }
    let ignore_case = condition.ignore_case;
    let fold = |v: &String| {
        if ignore_case {
            v.to_lowercase()
        } else {
            v.clone()
        }
    };
    let matcher = match operator {
        // Unspecified was refused above.
        Operator::Is | Operator::IsNot | Operator::Unspecified => Matcher::Is {
            values: values.iter().map(fold).collect(),
            ignore_case,
        },
        Operator::Contains => Matcher::Contains {
            values: values.iter().map(fold).collect(),
            ignore_case,
        },
        Operator::Matches => Matcher::Matches {
            set: patterns(values, ignore_case, field)?,
            ignore_case,
        },
    };
    Ok(Test {
        dimension,
        property,
        matcher,
        negated: operator == Operator::IsNot,
    })
}

fn patterns(values: &[String], ignore_case: bool, field: &str) -> Result<RegexSet, QueryError> {
    for (i, pattern) in values.iter().enumerate() {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| {
                QueryError::invalid(format!(
                    "{field}.values[{i}] {pattern:?} is not a regular expression: {err}"
                ))
            })?;
    }
    regex::RegexSetBuilder::new(values)
        .case_insensitive(ignore_case)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| {
            QueryError::invalid(format!(
                "{field}.values: the patterns together take more than the {} MiB allowed: {err}",
                REGEX_SIZE_LIMIT >> 20
            ))
        })
}

#[cfg(test)]
mod tests;
