//! `Rule` on the wire: written as SPEC text ("LM-04"), read in that form and in the
//! externally tagged form (`{"Lm":4}`) that Raft responses and stored rows used before.

use tern_model::Rule;

#[test]
fn rule_serializes_as_its_spec_id() {
    // Goal: --json and every JSON encoding show "LM-04", as the text output does.
    let cases = [
        (Rule::Lm(4), "\"LM-04\""),
        (Rule::Op(5), "\"OP-05\""),
        (Rule::Ha(2), "\"HA-02\""),
        (Rule::Rb(1), "\"RB-01\""),
    ];
    for (rule, want) in cases {
        assert_eq!(serde_json::to_string(&rule).unwrap(), want, "{rule:?}");
    }
}

#[test]
fn rule_deserializes_from_the_new_and_the_old_form() {
    // Goal: "LM-04" and the previously written {"Lm":4} both read back as Rule::Lm(4).
    for text in ["\"LM-04\"", "{\"Lm\":4}"] {
        assert_eq!(serde_json::from_str::<Rule>(text).unwrap(), Rule::Lm(4), "{text}");
    }
    for (text, want) in [("{\"Op\":1}", Rule::Op(1)), ("{\"Ha\":7}", Rule::Ha(7)), ("{\"Rb\":5}", Rule::Rb(5))] {
        assert_eq!(serde_json::from_str::<Rule>(text).unwrap(), want, "{text}");
    }
    // An optional rule, as in a Raft Rejection, in both forms and as null.
    let old: Option<Rule> = serde_json::from_str("{\"Lm\":9}").unwrap();
    let new: Option<Rule> = serde_json::from_str("\"LM-09\"").unwrap();
    assert_eq!((old, new), (Some(Rule::Lm(9)), Some(Rule::Lm(9))));
    assert_eq!(serde_json::from_str::<Option<Rule>>("null").unwrap(), None);
}

#[test]
fn rule_round_trips_through_json() {
    // Goal: what is written reads back equal, for every family.
    for rule in [Rule::Lm(1), Rule::Lm(17), Rule::Op(9), Rule::Ha(9), Rule::Rb(6)] {
        let text = serde_json::to_string(&rule).unwrap();
        assert_eq!(serde_json::from_str::<Rule>(&text).unwrap(), rule, "{text}");
    }
}

#[test]
fn rule_refuses_garbage_with_a_clear_error() {
    // Goal: an id that is no SPEC id is refused, and the error says what is expected.
    for text in ["\"LM\"", "\"XX-04\"", "\"LM-00\"", "\"LM-100\"", "\"\"", "{\"Zz\":4}", "4"] {
        let err = serde_json::from_str::<Rule>(text).unwrap_err().to_string();
        assert!(!err.is_empty(), "{text}");
    }
    let err = serde_json::from_str::<Rule>("\"XX-04\"").unwrap_err().to_string();
    assert!(err.contains("not a SPEC id such as LM-09"), "{err}");
    assert_eq!("lm-4".parse::<Rule>(), Ok(Rule::Lm(4)));
}
