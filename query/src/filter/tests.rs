use beacon_proto::insights::v1::Filters;

use super::*;

fn condition(dimension: Dimension, operator: Operator, values: &[&str]) -> Filter {
    Filter {
        kind: Some(filter::Kind::Condition(Condition {
            dimension: dimension as i32,
            operator: operator as i32,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            ignore_case: false,
            property: String::new(),
        })),
    }
}

fn list(filters: Vec<Filter>) -> Filters {
    Filters { filters }
}

fn compiled(filter: &Filter) -> ValueFilter {
    ValueFilter::compile(filter, "filter").expect("valid filter")
}

fn error(filter: &Filter) -> String {
    ValueFilter::compile(filter, "filter")
        .expect_err("invalid filter")
        .to_string()
}

#[test]
fn each_operator() {
    let is = compiled(&condition(Dimension::Page, Operator::Is, &["/a", "/b"]));
    assert!(is.accepts("/a") && is.accepts("/b") && !is.accepts("/ab"));
    let is_not = compiled(&condition(Dimension::Page, Operator::IsNot, &["/a"]));
    assert!(!is_not.accepts("/a") && is_not.accepts("/b"));
    let contains = compiled(&condition(Dimension::Page, Operator::Contains, &["blog"]));
    assert!(contains.accepts("/blog/x") && !contains.accepts("/Blog"));
    let matches = compiled(&condition(
        Dimension::Page,
        Operator::Matches,
        &["^/docs/\\d+$"],
    ));
    assert!(matches.accepts("/docs/12") && !matches.accepts("/docs/12/x"));
}

#[test]
fn ignore_case_folds_both_sides() {
    let mut filter = condition(Dimension::Source, Operator::Contains, &["GOOG"]);
    if let Some(filter::Kind::Condition(c)) = &mut filter.kind {
        c.ignore_case = true;
    }
    let compiled = compiled(&filter);
    assert!(compiled.accepts("Google") && compiled.accepts("google"));
}

#[test]
fn nested_trees_and_missing_values() {
    // (page contains "blog" or page is "/") and not page is "/blog/old"
    let tree = Filter {
        kind: Some(filter::Kind::AllOf(list(vec![
            Filter {
                kind: Some(filter::Kind::AnyOf(list(vec![
                    condition(Dimension::Page, Operator::Contains, &["blog"]),
                    condition(Dimension::Page, Operator::Is, &["/"]),
                ]))),
            },
            Filter {
                kind: Some(filter::Kind::NoneOf(list(vec![condition(
                    Dimension::Page,
                    Operator::Is,
                    &["/blog/old"],
                )]))),
            },
        ]))),
    };
    let tree = compiled(&tree);
    assert!(tree.accepts("/blog/new") && tree.accepts("/"));
    assert!(!tree.accepts("/blog/old") && !tree.accepts("/pricing"));
    assert!(!tree.accepts_missing());
    assert_eq!(
        tree.fields(),
        BTreeSet::from([(Dimension::Page, String::new())])
    );
    let is_not = compiled(&condition(Dimension::UtmSource, Operator::IsNot, &["x"]));
    assert!(is_not.accepts_missing());
}

#[test]
fn refuses_bad_filters_naming_the_field() {
    let msg = error(&Filter { kind: None });
    assert!(msg.contains("filter is empty"), "{msg}");
    let msg = error(&condition(Dimension::Unspecified, Operator::Is, &["x"]));
    assert!(msg.contains("filter.condition.dimension 0"), "{msg}");
    let msg = error(&condition(Dimension::Page, Operator::Unspecified, &["x"]));
    assert!(msg.contains("filter.condition.operator 0"), "{msg}");
    let msg = error(&condition(Dimension::Page, Operator::Is, &[]));
    assert!(
        msg.contains("filter.condition.values has 0 values"),
        "{msg}"
    );
    let long = "x".repeat(257);
    let msg = error(&condition(Dimension::Page, Operator::Is, &[&long]));
    assert!(msg.contains("values[0] is 257 bytes; 1 to 256"), "{msg}");
    let msg = error(&condition(Dimension::Page, Operator::Contains, &[""]));
    assert!(msg.contains("values[0] is 0 bytes; 1 to 256"), "{msg}");
    let msg = error(&condition(
        Dimension::Page,
        Operator::Matches,
        &["(unclosed"],
    ));
    assert!(
        msg.contains("values[0] \"(unclosed\" is not a regular expression"),
        "{msg}"
    );
    let empty_any = Filter {
        kind: Some(filter::Kind::AnyOf(list(vec![]))),
    };
    let msg = error(&Filter {
        kind: Some(filter::Kind::AllOf(list(vec![empty_any]))),
    });
    assert!(
        msg.contains("filter.all_of.filters[0].any_of is empty"),
        "{msg}"
    );
}

#[test]
fn limits_depth_and_conditions() {
    let mut deep = condition(Dimension::Page, Operator::Is, &["/"]);
    for _ in 0..MAX_DEPTH {
        deep = Filter {
            kind: Some(filter::Kind::AllOf(list(vec![deep]))),
        };
    }
    let msg = error(&deep);
    assert!(msg.contains("nested 6 levels deep; at most 5"), "{msg}");
    let many = Filter {
        kind: Some(filter::Kind::AnyOf(list(
            (0..=MAX_CONDITIONS)
                .map(|_| condition(Dimension::Page, Operator::Is, &["/"]))
                .collect(),
        ))),
    };
    let msg = error(&many);
    assert!(msg.contains("more than 20 conditions"), "{msg}");
}
