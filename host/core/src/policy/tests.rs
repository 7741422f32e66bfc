use super::*;

const DOC: &str = r#"
agent = "courier"

[[rule]]
name = "forecast"
grant = "weather"
methods = ["GET"]
path = "/v1/forecast/**"
effect = "allow"

[[rule]]
name = "mail-read"
grant = "mail"
methods = ["GET"]
user = "user:corp/*"
effect = "allow"

[[rule]]
name = "paste"
grant = "paste"
effect = "allow"

[[rule]]
name = "admin"
grant = "weather"
path = "/v1/admin/*"
effect = "approve"

[[after]]
name = "no-paste-after-mail"
after = { grant = "mail" }
then = { grant = "paste", methods = ["POST"] }
effect = "approve"
within_s = 600

[[after]]
name = "no-forecast-after-admin"
after = { path = "/v1/admin/**" }
then = { grant = "weather", path = "/v1/forecast/**" }
effect = "deny"

[[limit]]
name = "mail-reads"
match = { grant = "mail" }
max = 2
window_s = 60

[[budget]]
name = "upload"
match = { grant = "paste" }
bytes = 100
window_s = 60

[[rate]]
name = "calm"
match = { grant = "weather" }
per_second = 1
burst = 2
"#;

fn policy() -> Policy {
    Policy::from_toml(DOC).expect("valid policy")
}

fn call<'a>(grant: &'a str, method: &'a str, path: &'a str, user: Option<&'a str>) -> Call<'a> {
    Call {
        agent: "courier",
        grant,
        method,
        path,
        user,
        bytes: 0,
    }
}

const ALICE: Option<&str> = Some("user:corp/alice@example.com");

#[test]
fn the_first_matching_rule_decides_and_nothing_matched_is_denied() {
    let p = policy();
    let d = static_decision(
        &[&p],
        &call("weather", "GET", "/v1/forecast/oslo/today", None),
    );
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.rule, "policy \"courier\".rule \"forecast\"");
    let d = static_decision(&[&p], &call("weather", "GET", "/v1/admin/keys", None));
    assert_eq!(d.outcome, Outcome::Approve);
    // `*` is one segment; nothing else matches: default deny.
    let d = static_decision(&[&p], &call("weather", "GET", "/v1/admin/keys/x", None));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (Outcome::Deny, "default deny")
    );
    // The user selector: a user of corp, not nobody, not another issuer.
    assert_eq!(
        static_decision(&[&p], &call("mail", "GET", "/inbox", ALICE)).outcome,
        Outcome::Allow
    );
    assert_eq!(
        static_decision(&[&p], &call("mail", "GET", "/inbox", None)).outcome,
        Outcome::Deny
    );
    assert_eq!(
        static_decision(
            &[&p],
            &call("mail", "GET", "/inbox", Some("user:other/alice"))
        )
        .outcome,
        Outcome::Deny
    );
}

#[test]
fn the_agents_policy_comes_before_the_global_defaults() {
    let global = Policy::from_toml(
        "agent = \"*\"\n[[rule]]\nname = \"all-get\"\nmethods = [\"GET\"]\neffect = \"allow\"\n[[rule]]\nname = \"rest\"\neffect = \"deny\"\n",
    )
    .expect("global");
    let p = policy();
    let d = static_decision(&[&p, &global], &call("weather", "GET", "/v1/admin/x", None));
    assert_eq!(d.outcome, Outcome::Approve, "the agent's rule first");
    let d = static_decision(&[&p, &global], &call("other", "GET", "/x", None));
    assert_eq!(d.rule, "policy \"*\".rule \"all-get\"");
    let d = static_decision(&[&p, &global], &call("other", "POST", "/x", None));
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (Outcome::Deny, "policy \"*\".rule \"rest\"")
    );
}

#[test]
fn a_sequence_rule_fires_only_after_its_trigger_and_within_its_window() {
    let p = policy();
    let mut s = KeyState::default();
    let paste = Call {
        bytes: 10,
        ..call("paste", "POST", "/p", ALICE)
    };
    assert_eq!(
        evaluate(&[&p], &mut s, &paste, 1_000).outcome,
        Outcome::Allow
    );
    // Reading mail is the trigger: pasting now needs approval...
    assert_eq!(
        evaluate(&[&p], &mut s, &call("mail", "GET", "/inbox", ALICE), 1_001).outcome,
        Outcome::Allow
    );
    let d = evaluate(&[&p], &mut s, &paste, 1_002);
    assert_eq!(d.outcome, Outcome::Approve);
    assert_eq!(d.rule, "policy \"courier\".after \"no-paste-after-mail\"");
    // ...a GET to paste is not covered by `then`...
    assert_eq!(
        evaluate(&[&p], &mut s, &call("paste", "GET", "/p", ALICE), 1_003).outcome,
        Outcome::Allow
    );
    // ...and the trigger stops counting after `within_s`.
    assert_eq!(
        evaluate(&[&p], &mut s, &paste, 1_001 + 600).outcome,
        Outcome::Allow
    );

    // A deny sequence: after an admin call, forecasts are denied even
    // though a rule allows them. The admin call itself needed approval:
    // recorded only when it is forwarded.
    let admin = call("weather", "GET", "/v1/admin/keys", None);
    let forecast = call("weather", "GET", "/v1/forecast/x", None);
    let mut s = KeyState::default();
    assert_eq!(
        evaluate(&[&p], &mut s, &admin, 10).outcome,
        Outcome::Approve
    );
    assert_eq!(
        evaluate(&[&p], &mut s, &forecast, 11).outcome,
        Outcome::Allow
    );
    record(&[&p], &mut s, &admin, 12);
    let d = evaluate(&[&p], &mut s, &forecast, 13);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (
            Outcome::Deny,
            "policy \"courier\".after \"no-forecast-after-admin\""
        )
    );
}

#[test]
fn counts_budgets_and_rates_run_out_and_come_back() {
    let p = policy();
    let mut s = KeyState::default();
    let read = call("mail", "GET", "/inbox", ALICE);
    assert_eq!(evaluate(&[&p], &mut s, &read, 100).outcome, Outcome::Allow);
    assert_eq!(evaluate(&[&p], &mut s, &read, 101).outcome, Outcome::Allow);
    let d = evaluate(&[&p], &mut s, &read, 102);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (
            Outcome::LimitExceeded,
            "policy \"courier\".limit \"mail-reads\""
        )
    );
    assert_eq!(
        evaluate(&[&p], &mut s, &read, 160).outcome,
        Outcome::Allow,
        "the window moved"
    );

    let upload = |bytes| Call {
        bytes,
        ..call("paste", "PUT", "/p", None)
    };
    assert_eq!(
        evaluate(&[&p], &mut s, &upload(60), 200).outcome,
        Outcome::Allow
    );
    let d = evaluate(&[&p], &mut s, &upload(50), 201);
    assert_eq!(d.outcome, Outcome::LimitExceeded);
    assert!(d.detail.contains("60 of 100 bytes"), "{}", d.detail);
    assert_eq!(
        evaluate(&[&p], &mut s, &upload(40), 202).outcome,
        Outcome::Allow
    );
    assert_eq!(
        evaluate(&[&p], &mut s, &upload(1), 203).outcome,
        Outcome::LimitExceeded
    );

    let f = call("weather", "GET", "/v1/forecast/a", None);
    assert_eq!(evaluate(&[&p], &mut s, &f, 300).outcome, Outcome::Allow);
    assert_eq!(evaluate(&[&p], &mut s, &f, 300).outcome, Outcome::Allow);
    let d = evaluate(&[&p], &mut s, &f, 300);
    assert_eq!(
        (d.outcome, d.rule.as_str()),
        (Outcome::LimitExceeded, "policy \"courier\".rate \"calm\"")
    );
    assert_eq!(
        evaluate(&[&p], &mut s, &f, 301).outcome,
        Outcome::Allow,
        "one token a second"
    );
    // A denied call uses nothing up.
    assert_eq!(
        evaluate(
            &[&p],
            &mut s,
            &call("weather", "DELETE", "/v1/forecast/a", None),
            302
        )
        .outcome,
        Outcome::Deny
    );
    assert_eq!(evaluate(&[&p], &mut s, &f, 302).outcome, Outcome::Allow);
}

#[test]
fn bad_policies_name_the_rule_and_the_field() {
    let cases = [
        (
            "[[rule]]\nname = \"r\"\npath = \"v1\"\neffect = \"allow\"",
            "policy \"courier\".rule \"r\".path",
        ),
        (
            "[[rule]]\nname = \"r\"\npath = \"/v1/x*\"\neffect = \"allow\"",
            "rule \"r\".path",
        ),
        (
            "[[rule]]\nname = \"r\"\nmethods = [\"get\"]\neffect = \"allow\"",
            "rule \"r\".methods",
        ),
        (
            "[[rule]]\nname = \"r\"\nuser = \"alice\"\neffect = \"allow\"",
            "rule \"r\".user",
        ),
        (
            "[[rule]]\nname = \"r\"\ngrant = \"Bad Grant\"\neffect = \"allow\"",
            "rule \"r\".grant",
        ),
        (
            "[[rule]]\nname = \"r\"\neffect = \"allow\"\n[[rule]]\nname = \"r\"\neffect = \"deny\"",
            "rule \"r\".name",
        ),
        (
            "[[after]]\nname = \"a\"\nafter = {}\nthen = {}\neffect = \"allow\"",
            "after \"a\".effect",
        ),
        (
            "[[after]]\nname = \"a\"\nafter = { path = \"x\" }\nthen = {}\neffect = \"deny\"",
            "after \"a\".after.path",
        ),
        (
            "[[limit]]\nname = \"l\"\nmax = 0\nwindow_s = 60",
            "limit \"l\".max",
        ),
        (
            "[[limit]]\nname = \"l\"\nmax = 1\nwindow_s = 0",
            "limit \"l\".window_s",
        ),
        (
            "[[budget]]\nname = \"b\"\nbytes = 1\nwindow_s = 99999999",
            "budget \"b\".window_s",
        ),
        (
            "[[rate]]\nname = \"r\"\nper_second = 0\nburst = 1",
            "rate \"r\".per_second",
        ),
        (
            "[[rate]]\nname = \"r\"\nper_second = 1\nburst = 0",
            "rate \"r\".burst",
        ),
    ];
    for (body, field) in cases {
        let err = Policy::from_toml(&format!("agent = \"courier\"\n{body}\n"))
            .expect_err(body)
            .to_string();
        assert!(err.contains(field), "{body}: {err}");
    }
    // Unknown fields are refused with the place they were found.
    let err = Policy::from_toml(
        "agent = \"courier\"\n[[rule]]\nname = \"r\"\neffect = \"allow\"\ncolour = \"red\"\n",
    )
    .expect_err("unknown field")
    .to_string();
    assert!(err.contains("colour") && err.contains("line"), "{err}");
}

#[test]
fn a_policy_round_trips_through_the_registry_form() {
    let p = policy();
    assert_eq!(Policy::from_json(&p.to_json()).expect("json"), p);
    assert_eq!(Policy::from_toml(&p.to_toml()).expect("toml"), p);
    assert_eq!(
        applicable(&[&p], &call("paste", "POST", "/x", None)),
        [
            "policy \"courier\".after \"no-paste-after-mail\"",
            "policy \"courier\".budget \"upload\""
        ]
    );
}

#[test]
fn globs() {
    let g = |p: &str, path: &str| PathPattern::parse(p).expect("pattern").matches(path);
    assert!(g("/v1/**", "/v1"));
    assert!(g("/v1/**", "/v1/a/b"));
    assert!(!g("/v1/**", "/v10/a"));
    assert!(g("/v1/*/x", "/v1/a/x"));
    assert!(!g("/v1/*/x", "/v1/a/b/x"));
    assert!(g("/**/x", "/a/b/x"));
    assert!(g("/v1/a", "/v1/a"));
    assert!(!g("/v1/**", "v1/a"));
    // A trailing slash names the same resource.
    assert!(g("/v1/a", "/v1/a/"));
    // A guest's very long path matches nothing (bounded work)...
    let long = "/x".repeat(MAX_SEGMENTS + 1);
    assert!(!g("/**/x/**", &long));
    assert!(g("/**/x/**", &"/x".repeat(MAX_SEGMENTS)));
}

#[test]
fn paths_an_upstream_would_read_as_another_are_denied_before_any_rule() {
    let p = Policy::from_toml(
        "agent = \"courier\"\n[[rule]]\nname = \"no-admin\"\npath = \"/v1/admin/**\"\neffect = \"deny\"\n[[rule]]\nname = \"rest\"\neffect = \"allow\"\n",
    )
    .expect("policy");
    let d = |path: &str| static_decision(&[&p], &call("weather", "GET", path, None));
    assert_eq!(d("/v1/forecast").outcome, Outcome::Allow);
    assert_eq!(d("/v1/admin/").rule, "policy \"courier\".rule \"no-admin\"");
    for sneaky in [
        "/v1//admin/x",
        "/v1/admin;x/y",
        "/v1/./admin/x",
        "/v1/x/../admin",
        "/v1/%61dmin/x",
        "/v1%2Fadmin/x",
        "/v1/%zz",
        &format!("/v1/admin{}", "/x".repeat(MAX_SEGMENTS)),
        &format!("/v1/ok{}", "/x".repeat(MAX_SEGMENTS)),
    ] {
        let r = d(sneaky);
        assert_eq!(
            (r.outcome, r.rule.as_str()),
            (Outcome::Deny, "path form"),
            "{sneaky}"
        );
    }
    // A deny rule on an exact path is not passed by trailing slashes an
    // upstream would merge.
    let exact = Policy::from_toml(
        "agent = \"courier\"\n[[rule]]\nname = \"no-admin\"\npath = \"/v1/admin\"\neffect = \"deny\"\n[[rule]]\nname = \"rest\"\neffect = \"allow\"\n",
    )
    .expect("policy");
    let e = |path: &str| static_decision(&[&exact], &call("weather", "GET", path, None));
    assert_eq!(e("/v1/admin/").outcome, Outcome::Deny);
    for sneaky in ["/v1/admin//", "/v1/admin///", "//v1/admin"] {
        let r = e(sneaky);
        assert_eq!(
            (r.outcome, r.rule.as_str()),
            (Outcome::Deny, "path form"),
            "{sneaky}"
        );
    }
    // Escapes of other characters are ordinary.
    assert_eq!(d("/v1/a%20b").outcome, Outcome::Allow);
    // Without a policy, the grants alone decide: nothing is refused here.
    assert_eq!(
        static_decision(&[], &call("weather", "GET", "/v1//admin", None)).rule,
        "default deny"
    );
}

#[test]
fn sequences_span_the_delegation_tree_and_limits_stay_per_agent() {
    let p = policy();
    let mut tree = KeyState::default();
    // A child of the tree reads mail; its parent then posts to paste.
    let child = Call {
        agent: "reader",
        ..call("mail", "GET", "/inbox", ALICE)
    };
    assert_eq!(
        evaluate(&[&p], &mut tree, &child, 1).outcome,
        Outcome::Allow
    );
    let parent = Call {
        agent: "courier",
        bytes: 1,
        ..call("paste", "POST", "/p", ALICE)
    };
    assert_eq!(
        evaluate(&[&p], &mut tree, &parent, 2).outcome,
        Outcome::Approve
    );
    // Counts are per acting agent: two agents each get their two reads.
    let reads = |agent| Call {
        agent,
        ..call("mail", "GET", "/inbox", ALICE)
    };
    assert_eq!(
        evaluate(&[&p], &mut tree, &reads("reader"), 3).outcome,
        Outcome::Allow
    );
    assert_eq!(
        evaluate(&[&p], &mut tree, &reads("reader"), 4).outcome,
        Outcome::LimitExceeded
    );
    assert_eq!(
        evaluate(&[&p], &mut tree, &reads("courier"), 5).outcome,
        Outcome::Allow
    );
    assert_eq!(tree.last_seen(), 5);
}
