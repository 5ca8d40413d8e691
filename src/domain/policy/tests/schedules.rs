//! Time in the policy: the digest's schedule, rotations and the escalation ladder.

use super::*;

#[test]
fn the_digest_has_a_channel_and_a_schedule() {
    use chrono::TimeZone;
    let with = |digest: &str| format!("{GOOD}digest:\n{digest}");
    let (policy, _) = Policy::parse(
        "p.yaml",
        &with("  channel: C0AUDIT\n  schedule: \"0 0 9 * * Mon\"\n"),
    )
    .unwrap();
    let digest = policy.digest.expect("a digest");
    assert_eq!(digest.channel, "C0AUDIT");
    // A Wednesday is in the week from Monday 09:00 to the next Monday 09:00.
    let wednesday = chrono::Utc
        .with_ymd_and_hms(2026, 11, 25, 15, 0, 0)
        .unwrap();
    let (from, to) = digest.period(wednesday).expect("a period");
    assert_eq!(
        from,
        chrono::Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
    );
    assert_eq!(
        to,
        chrono::Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap()
    );
    // At the posting moment itself, the period is the one that starts then.
    let (from, _) = digest.period(to).expect("a period");
    assert_eq!(from, to);

    for (digest, path, says) in [
        (
            "  channel: audit\n  schedule: \"0 0 9 * * Mon\"\n",
            "digest.channel",
            "channel ID",
        ),
        (
            "  channel: C0AUDIT\n  schedule: \"every monday\"\n",
            "digest.schedule",
            "seconds field",
        ),
        ("  channel: C0AUDIT\n", "digest", "schedule"),
    ] {
        let errs = errors(&with(digest));
        assert!(
            errs.iter()
                .any(|e| e.path.starts_with(path) && e.message.contains(says) && e.line > 0),
            "{digest}: {errs:?}"
        );
    }
}

#[test]
fn a_rotation_has_one_person_on_call_and_the_ladder_is_checked() {
    use chrono::TimeZone;
    let text = GOOD
        .replace(
            "groups:\n",
            "groups:\n  sre:\n    rotation: { members: [U0SRE1, U0SRE2, U0SRE3], shift: 7d, start: \"2026-01-05T09:00:00Z\" }\n",
        )
        .replace(
            "    approvers: [dba]\n",
            "    approvers: [dba, sre]\n    remind: 10m\n    escalation:\n      - { after: 15m, to: sre }\n      - { after: 45m, to: dba }\n",
        );
    let (policy, _) = Policy::parse("p.yaml", &text).unwrap();
    let sre = &policy.rotations["sre"];
    let at = |d: u32, h: u32| chrono::Utc.with_ymd_and_hms(2026, 1, d, h, 0, 0).unwrap();
    assert_eq!(sre.on_call(at(5, 9)), "U0SRE1");
    assert_eq!(sre.on_call(at(12, 8)), "U0SRE1");
    assert_eq!(sre.on_call(at(12, 9)), "U0SRE2");
    assert_eq!(
        sre.on_call(at(26, 9)),
        "U0SRE1",
        "round again after three shifts"
    );
    let db = &policy.resources["prod-db"];
    assert_eq!(db.remind.map(|r| r.secs()), Some(600));
    assert_eq!(
        db.escalation
            .iter()
            .map(|s| (s.after.secs(), s.to.as_str()))
            .collect::<Vec<_>>(),
        [(900, "sre"), (2_700, "dba")]
    );
    // Only the person on call approves for the rotation; `approve: members` lets them all.
    let now = at(12, 10);
    assert!(policy.approves(&db.approvers, "U0SRE2", now));
    assert!(!policy.approves(&db.approvers, "U0SRE1", now));
    assert_eq!(policy.paged("sre", now), ["U0SRE2"]);
    assert_eq!(policy.paged("dba", now), ["U0DBA1", "U0DBA2"]);
    let all = text.replace(
        "start: \"2026-01-05T09:00:00Z\" }",
        "start: \"2026-01-05T09:00:00Z\" }\n    approve: members",
    );
    let (policy, _) = Policy::parse("p.yaml", &all).unwrap();
    assert!(policy.approves(&policy.resources["prod-db"].approvers, "U0SRE1", now));

    let one = GOOD.replace(
        "    approvers: [dba]\n",
        "    approvers: [dba]\n    escalation: { after: 15m, to: dba }\n",
    );
    let (policy, _) = Policy::parse("p.yaml", &one).unwrap();
    assert_eq!(policy.resources["prod-db"].escalation.len(), 1);
    for (ladder, path, says) in [
        (
            "{ after: 3h, to: dba }",
            "resources.prod-db.escalation[0].after",
            "never page",
        ),
        (
            "{ after: 15m, to: nobody }",
            "resources.prod-db.escalation[0].to",
            "neither a defined group",
        ),
    ] {
        let bad = GOOD.replace(
            "    approvers: [dba]\n",
            &format!("    approvers: [dba]\n    escalation: {ladder}\n"),
        );
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.message.contains(says)),
            "{ladder}: {errs:?}"
        );
    }
}

#[test]
fn the_digest_and_rotations_follow_the_wall_clock_of_settings_timezone() {
    use chrono::TimeZone;
    let utc = |y, mo, d, h, mi| chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
    let text = GOOD
        .replace(
            "  min_duration: 5m\n",
            "  min_duration: 5m\n  timezone: Europe/Berlin\n",
        )
        .replace(
            "groups:\n",
            "groups:\n  sre:\n    rotation: { members: [U0SRE1, U0SRE2], shift: 7d, start: \"2026-03-23T09:00\" }\n",
        )
        + "digest:\n  channel: C0AUDIT\n  schedule: \"0 0 9 * * Mon\"\n";
    let (policy, _) = Policy::parse("p.yaml", &text).unwrap();
    assert_eq!(policy.settings.timezone, chrono_tz::Europe::Berlin);

    // Monday 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer (from 29 March).
    let digest = policy.digest.as_ref().expect("a digest");
    let (from, to) = digest.period(utc(2026, 3, 25, 12, 0)).expect("a period");
    assert_eq!((from, to), (utc(2026, 3, 23, 8, 0), utc(2026, 3, 30, 7, 0)));

    // The start has no offset: 09:00 Berlin (08:00 UTC). The handover a week later, after the
    // clocks went forward, is still at 09:00 there, which is 07:00 UTC.
    let sre = &policy.rotations["sre"];
    assert_eq!(sre.start, utc(2026, 3, 23, 8, 0));
    assert_eq!(sre.on_call(utc(2026, 3, 30, 6, 59)), "U0SRE1");
    assert_eq!(sre.on_call(utc(2026, 3, 30, 7, 0)), "U0SRE2");

    // A name that is not a zone is refused where it stands, with the closest zone.
    let errs = errors(&GOOD.replace(
        "  min_duration: 5m\n",
        "  min_duration: 5m\n  timezone: Europe/Berlinn\n",
    ));
    let tz = errs
        .iter()
        .find(|e| e.path == "settings.timezone")
        .unwrap_or_else(|| panic!("{errs:?}"));
    assert_eq!(tz.line, 5, "{tz:?}");
    assert!(
        tz.message.contains("Did you mean `Europe/Berlin`"),
        "{tz:?}"
    );
    // A rotation start that is no time at all names the zone it would be read in.
    let errs = errors(&text.replace("2026-03-23T09:00", "next monday"));
    assert!(
        errs.iter()
            .any(|e| e.path == "groups.sre.rotation.start" && e.message.contains("Europe/Berlin")),
        "{errs:?}"
    );
}
