//! The rebalancer (RB-01..RB-05) on small hand-made clusters and on generated ones.

mod common;

use common::cluster::{GuestSpec, Rng, generate, host_with, random_guest};
use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tern_model::rebalance::{
    Group, Growth, GuestRules, HostInput, Input, Level, MakeRoomError, Plan, Reason, Settings, Strength, grow,
    imbalance_ppm, make_room, plan,
};
use tern_model::units::{GIB, MIB};
use tern_model::{Code, GuestShape, Reserved, Server};

static NOTHING: Reserved = Reserved {
    strands: std::collections::BTreeSet::new(),
    memory: Vec::new(),
    console_ports: std::collections::BTreeSet::new(),
    domain_names: std::collections::BTreeSet::new(),
};

fn input<'a>(servers: &'a [Server], guests: BTreeMap<String, GuestRules>, settings: Settings) -> Input<'a> {
    Input {
        hosts: servers
            .iter()
            .map(|s| HostInput { server: s, reserved: &NOTHING, eligible: Ok(()), in_flight: 0 })
            .collect(),
        guests,
        settings,
    }
}

fn spec(name: &str, cores: u32, gib: u64, cpu_pct: u32) -> GuestSpec {
    GuestSpec { name: name.into(), cores, blocks: vec![gib * GIB], cpu_pct, dirty: 20 }
}

/// `busy` holds `n` busy 12-core 64G guests; the other hosts are empty.
fn lopsided(n: usize, others: usize) -> Vec<Server> {
    let mut rng = Rng(7);
    let guests: Vec<GuestSpec> = (0..n).map(|i| spec(&format!("web{i}"), 12, 64, 90)).collect();
    let mut v = vec![host_with("busy", &guests, &mut rng).0];
    v.extend((0..others).map(|i| common::cluster::empty_host(&format!("idle{i}"))));
    v
}

/// Every move of `plan`, replayed in order on `servers`, passes the one binding check
/// and binds; returns the servers after the plan.
fn replay(servers: &[Server], plan: &Plan) -> Vec<Server> {
    let mut servers = servers.to_vec();
    for m in &plan.moves {
        let s = servers.iter().position(|x| x.name == m.source).expect("source");
        let t = servers.iter().position(|x| x.name == m.target).expect("target");
        let guest = servers[s].domain(&m.domain).expect("guest on its source").clone();
        let shape = GuestShape::of(&servers[s], &guest);
        servers[t]
            .check_binding(&shape, &m.binding, &Reserved::default())
            .unwrap_or_else(|e| panic!("{}: {e}", m.domain));
        let (d, _, _) = servers[s].unbind_domain(&m.domain).expect("unbind");
        servers[t].bind_domain(d, &m.binding).unwrap_or_else(|e| panic!("{}: {e}", m.domain));
    }
    servers
}

fn rules(list: &[(&str, GuestRules)]) -> BTreeMap<String, GuestRules> {
    list.iter().map(|(n, r)| (n.to_string(), r.clone())).collect()
}

fn group(name: &str, strength: Strength) -> Option<Group> {
    Some(Group { name: name.into(), strength })
}

#[test]
fn moves_guests_from_the_busiest_host_until_no_move_gains_enough() {
    // Goal: RB-01/RB-02: a host with three busy guests and two idle hosts: guests move, imbalance falls, every move binds.
    let servers = lopsided(3, 2);
    let p = plan(&input(&servers, BTreeMap::new(), Settings::default()));
    assert!(!p.moves.is_empty(), "{p:#?}");
    assert!(p.imbalance_after_ppm < p.imbalance_before_ppm, "{p:#?}");
    assert!(p.moves.iter().all(|m| m.source == "busy" && m.reason == Reason::Load), "{p:#?}");
    let mut last = p.imbalance_before_ppm;
    for m in &p.moves {
        assert!(m.imbalance_after_ppm < last, "every move lowers the imbalance: {p:#?}");
        last = m.imbalance_after_ppm;
        assert!(m.cost.total_ms > 0 && m.cost.downtime_ms > 0 && m.cost.downtime_ms < m.cost.total_ms);
    }
    let after = replay(&servers, &p);
    assert!(after.iter().all(|s| s.validate().is_ok()));
}

#[test]
fn a_cluster_below_the_levels_threshold_gets_no_load_moves() {
    // Goal: RB-01: act only above the threshold; the plan says why it did nothing.
    let mut rng = Rng(3);
    let servers: Vec<Server> =
        (0..3).map(|i| host_with(&format!("h{i}"), &[spec(&format!("g{i}"), 4, 64, 50)], &mut rng).0).collect();
    let p = plan(&input(&servers, BTreeMap::new(), Settings::default()));
    assert!(p.moves.is_empty(), "{p:#?}");
    assert!(p.notes.iter().any(|n| n.contains("below level 3's threshold")), "{:?}", p.notes);
    assert_eq!(p.imbalance_before_ppm, p.imbalance_after_ppm);
}

#[test]
fn higher_levels_act_on_smaller_imbalances() {
    // Goal: RB-01 levels: the same mild imbalance is left alone at level 2 and acted on at level 5.
    let mut rng = Rng(5);
    let servers = vec![
        host_with("a", &[spec("g1", 40, 32, 90), spec("g2", 20, 16, 60)], &mut rng).0,
        host_with("b", &[spec("g3", 40, 32, 50)], &mut rng).0,
        host_with("c", &[spec("g4", 40, 32, 50)], &mut rng).0,
    ];
    let at = |level: u8| {
        plan(&input(&servers, BTreeMap::new(), Settings { level: Level::new(level).unwrap(), ..Settings::default() }))
    };
    let (two, five) = (at(2), at(5));
    assert!(two.moves.is_empty(), "{two:#?}");
    assert!(!five.moves.is_empty(), "{five:#?}");
    assert!(Level::new(0).is_err() && Level::new(6).is_err());
}

#[test]
fn level_1_plans_only_mandatory_moves() {
    // Goal: RB-03 at level 1: a broken anti-affinity must-rule is mended, load alone moves nothing.
    let servers = lopsided(3, 2);
    let anti = GuestRules { anti_affinity: group("db", Strength::Must), ..Default::default() };
    let r = rules(&[("web0", anti.clone()), ("web1", anti)]);
    let p = plan(&input(&servers, r, Settings { level: Level::MANDATORY, ..Settings::default() }));
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!(p.moves[0].domain, "web1");
    assert_eq!(p.moves[0].reason, Reason::Rule { group: "db".into() });
    replay(&servers, &p);
}

#[test]
fn a_move_that_lm09_refuses_is_never_planned() {
    // Goal: RB-03: a target with enough free memory in total but no range for a 40G block is skipped (LM-09) and counted.
    let mut rng = Rng(11);
    let busy =
        host_with("busy", &[spec("big0", 16, 40, 95), spec("big1", 16, 40, 95), spec("big2", 16, 40, 95)], &mut rng).0;
    // `frag` has 400G free, but in 20G pieces between small guests.
    let mut frag = common::cluster::empty_host("frag");
    let mut rows: Vec<tern_model::MemoryBlock> = frag.memory.iter().filter(|b| b.bound.is_some()).cloned().collect();
    let mut pa = common::cluster::BASE_PA + common::cluster::SYS + common::cluster::PRIMARY_MEMORY;
    for i in 0..20 {
        rows.push(tern_model::MemoryBlock { pa, size: 20 * GIB, bound: None });
        pa += 20 * GIB;
        let name = format!("tiny{i}");
        rows.push(tern_model::MemoryBlock { pa, size: 4 * GIB, bound: Some(tern_model::Owner::Domain(name.clone())) });
        pa += 4 * GIB;
        frag.domains.push(common::cluster::light_guest(&name, 5000 + i as u16, 1, 1));
    }
    let end = common::cluster::BASE_PA + common::cluster::MEMORY;
    rows.push(tern_model::MemoryBlock { pa, size: 16 * GIB, bound: None });
    rows.push(tern_model::MemoryBlock {
        pa: pa + 16 * GIB,
        size: end - pa - 16 * GIB,
        bound: Some(tern_model::Owner::Domain("hog".into())),
    });
    frag.domains.push(common::cluster::light_guest("hog", 5100, 1, 1));
    frag.memory = rows;
    for (i, cid) in (4..24).enumerate() {
        frag.cores[cid].strands.iter_mut().for_each(|s| s.bound = Some(format!("tiny{i}")));
    }
    frag.cores[24].strands.iter_mut().for_each(|s| s.bound = Some("hog".into()));
    assert_valid(&frag);
    let servers = vec![busy, frag, common::cluster::empty_host("roomy")];
    let settings = Settings { level: Level::new(5).unwrap(), ..Settings::default() };
    let p = plan(&input(&servers, BTreeMap::new(), settings));
    assert!(!p.moves.is_empty(), "{p:#?}");
    assert!(p.moves.iter().all(|m| m.target != "frag"), "{p:#?}");
    assert!(p.preflight_refusals > 0, "the fragmented host was a candidate: {p:#?}");
    replay(&servers, &p);
}

#[test]
fn frozen_guests_and_ineligible_hosts_stay_out_of_the_plan() {
    // Goal: RB-03: a guest in cooldown never moves; a host in maintenance neither gives nor takes.
    let servers = lopsided(3, 2);
    let cool = GuestRules { frozen: Some("cooldown until 12:00".into()), ..Default::default() };
    let r = rules(&[("web0", cool.clone()), ("web1", cool)]);
    let mut inp = input(&servers, r, Settings::default());
    inp.hosts[1].eligible = Err("maintenance".into()); // idle0
    let p = plan(&inp);
    assert!(!p.moves.is_empty(), "{p:#?}");
    assert!(p.moves.iter().all(|m| m.domain == "web2" && m.target == "idle1"), "{p:#?}");
}

#[test]
fn a_host_at_its_migration_limit_is_left_out() {
    // Goal: RB-03 per-host concurrency: a host already running a migration is neither source nor target.
    let servers = lopsided(3, 2);
    let mut inp = input(&servers, BTreeMap::new(), Settings::default());
    inp.hosts[0].in_flight = 1; // busy
    assert!(plan(&inp).moves.is_empty());
    inp.settings.host_concurrency = 2;
    assert!(!plan(&inp).moves.is_empty());
}

#[test]
fn must_affinity_members_stay_together_and_a_split_member_returns() {
    // Goal: RB-03: members of a must-affinity group never leave each other; one found apart is moved back, mandatorily.
    let servers = lopsided(3, 2);
    let aff = GuestRules { affinity: group("app", Strength::Must), ..Default::default() };
    let r = rules(&[("web0", aff.clone()), ("web1", aff.clone()), ("web2", aff.clone())]);
    let p = plan(&input(&servers, r, Settings { level: Level::new(5).unwrap(), ..Settings::default() }));
    assert!(p.moves.is_empty(), "the whole host is one group: {p:#?}");
    // Split: web1 alone on idle0.
    let mut rng = Rng(1);
    let split = vec![
        host_with("busy", &[spec("web0", 4, 32, 50), spec("web2", 4, 32, 50)], &mut rng).0,
        host_with("idle0", &[spec("web1", 4, 32, 50)], &mut rng).0,
    ];
    let r = rules(&[("web0", aff.clone()), ("web1", aff.clone()), ("web2", aff)]);
    let p = plan(&input(&split, r, Settings { level: Level::MANDATORY, ..Settings::default() }));
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!((p.moves[0].domain.as_str(), p.moves[0].target.as_str()), ("web1", "busy"));
}

#[test]
fn anti_affinity_must_members_never_meet_on_a_host() {
    // Goal: RB-03: moves spread load but never put two members of a must anti-affinity group together.
    let mut rng = Rng(2);
    let servers = vec![
        host_with("busy", &[spec("a0", 24, 64, 95), spec("a1", 24, 64, 95), spec("x", 24, 64, 95)], &mut rng).0,
        host_with("b", &[spec("a2", 1, 8, 5)], &mut rng).0,
        common::cluster::empty_host("c"),
    ];
    let anti = GuestRules { anti_affinity: group("ha-pair", Strength::Must), ..Default::default() };
    let r = rules(&[("a0", anti.clone()), ("a1", anti.clone()), ("a2", anti)]);
    let p = plan(&input(&servers, r, Settings { level: Level::new(5).unwrap(), ..Settings::default() }));
    let after = replay(&servers, &p);
    for s in &after {
        let members = s.domains.iter().filter(|d| d.name.starts_with('a')).count();
        assert!(members <= 1, "{} holds {members} members: {p:#?}", s.name);
    }
}

#[test]
fn a_should_rule_is_weighed_not_enforced() {
    // Goal: RB-03 soft rules: a should anti-affinity pair on one host counts against the score, so the move that separates them wins.
    let mut rng = Rng(4);
    let guests = [spec("ay", 24, 64, 80), spec("p0", 24, 64, 80), spec("p1", 24, 64, 80)];
    let servers = vec![host_with("a", &guests, &mut rng).0, common::cluster::empty_host("b")];
    let one = Settings { max_moves: 1, ..Settings::default() };
    let plain = plan(&input(&servers, BTreeMap::new(), one));
    assert_eq!(plain.moves[0].domain, "ay", "equal gains go by name: {plain:#?}");
    let soft = GuestRules { anti_affinity: group("pair", Strength::Should), ..Default::default() };
    let p = plan(&input(&servers, rules(&[("p0", soft.clone()), ("p1", soft)]), one));
    assert_eq!(p.moves[0].domain, "p0", "{p:#?}");
}

#[test]
fn of_two_equal_gains_the_cheaper_migration_wins() {
    // Goal: RB-02: between guests that balance equally, the one that dirties less memory (shorter migration) moves.
    let mut rng = Rng(6);
    let mut hot = spec("hot", 24, 64, 90);
    hot.dirty = 400;
    let mut calm = spec("calm", 24, 64, 90);
    calm.dirty = 5;
    let servers = vec![host_with("a", &[hot, calm], &mut rng).0, common::cluster::empty_host("b")];
    let p = plan(&input(&servers, BTreeMap::new(), Settings { max_moves: 1, ..Settings::default() }));
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!(p.moves[0].domain, "calm");
}

#[test]
fn a_move_whose_downtime_is_too_long_is_not_made() {
    // Goal: RB-02 / LM-15: a guest whose pre-copy would not converge within max_downtime_ms stays.
    let mut rng = Rng(8);
    let mut wild = spec("wild", 24, 64, 95);
    wild.dirty = 5000;
    let servers = vec![host_with("a", &[wild], &mut rng).0, common::cluster::empty_host("b")];
    let p = plan(&input(&servers, BTreeMap::new(), Settings { level: Level::new(5).unwrap(), ..Settings::default() }));
    assert!(p.moves.is_empty(), "{p:#?}");
}

/// Every eligible host's guests can be placed on the others, one by one, as HA would.
fn n_plus_one(servers: &[Server]) -> Result<(), String> {
    for lost in servers {
        let others: Vec<&Server> = servers.iter().filter(|s| s.name != lost.name).collect();
        let mut reserved: Vec<Reserved> = others.iter().map(|_| Reserved::default()).collect();
        let mut guests: Vec<&str> =
            lost.domains.iter().filter(|d| d.kind == tern_model::DomainKind::Guest).map(|d| d.name.as_str()).collect();
        guests.sort_unstable();
        for g in guests {
            let cands: Vec<(&Server, &Reserved)> = others.iter().copied().zip(reserved.iter()).collect();
            let choice = tern_model::planner::choose_target(lost, g, &cands)
                .map_err(|_| format!("{g} of {} fits nowhere", lost.name))?;
            let k = others.iter().position(|s| s.name == choice.target).expect("a candidate");
            reserved[k].add(&choice.binding);
        }
    }
    Ok(())
}

#[test]
fn n_plus_one_keeps_room_to_restart_any_one_host() {
    // Goal: RB-03 N+1: on clusters where it holds before, it holds after every plan made with n_plus_one.
    let mut checked = 0;
    for seed in 0..6 {
        let servers = generate(100 + seed, 5, 120);
        if n_plus_one(&servers).is_err() {
            continue;
        }
        checked += 1;
        let settings =
            Settings { level: Level::new(5).unwrap(), n_plus_one: true, max_moves: 12, ..Settings::default() };
        let with = plan(&input(&servers, BTreeMap::new(), settings));
        n_plus_one(&replay(&servers, &with)).unwrap_or_else(|e| panic!("seed {seed}: {e}: {with:#?}"));
    }
    assert!(checked >= 2, "too few generated clusters start N+1-safe ({checked})");
}

#[test]
fn reservations_on_a_target_are_not_handed_out() {
    // Goal: RB-03: the plan works on the state minus active reservations: a reserved core is never in a move's binding.
    let servers = lopsided(3, 1);
    let mut held = Reserved::default();
    held.strands.extend(8..40); // cores 4-19 of idle0
    let mut inp = input(&servers, BTreeMap::new(), Settings::default());
    inp.hosts[1].reserved = &held;
    let p = plan(&inp);
    for m in &p.moves {
        assert!(m.binding.strands.iter().all(|s| !held.strands.contains(s)), "{p:#?}");
    }
}

fn seed_make_room_cluster() -> Vec<Server> {
    // m10-1-1 with ldom1 (248M + 16136M); m10-1-fragmented: 10G free, ldom2 25088M, 10G free, ldom3 10232M;
    // m10-1-2 empty.
    let source = seed_source();
    let mut frag = m10_1("m10-1-fragmented");
    let mut ldom2 = guest_domain("ldom2", 5000);
    ldom2.vdisks.truncate(1);
    add_domain(&mut frag, ldom2);
    let mut ldom3 = guest_domain("ldom3", 5001);
    ldom3.vdisks.clear();
    add_domain(&mut frag, ldom3);
    bind_cores(&mut frag, "ldom2", &[4, 5, 6, 7, 8, 9]);
    bind_cores(&mut frag, "ldom3", &[10, 11]);
    lay_out_after_primary(&mut frag, &[("", 10 * GIB), ("ldom2", 25088 * MIB), ("", 10 * GIB), ("ldom3", 10232 * MIB)]);
    assert_valid(&frag);
    vec![source, frag, seed_target()]
}

#[test]
fn make_room_moves_the_cheapest_guest_whose_leaving_joins_a_16g_range() {
    // Goal: RB-05 on the seed: ldom1 is refused by m10-1-fragmented (LM-09); moving ldom3 away joins 10G + 10232M, and ldom1 fits.
    let servers = seed_make_room_cluster();
    let refused = check(&servers[0], &servers[1], "ldom1");
    assert!(error_ids(&refused).iter().any(|(_, c)| *c == Code::MemoryBlockFit), "{refused:?}");
    let p = make_room(&input(&servers, BTreeMap::new(), Settings::default()), "ldom1", "m10-1-fragmented").unwrap();
    let steps: Vec<(&str, &str, &Reason)> =
        p.moves.iter().map(|m| (m.domain.as_str(), m.target.as_str(), &m.reason)).collect();
    assert_eq!(steps.len(), 2, "{p:#?}");
    assert_eq!(steps[0].0, "ldom3");
    assert_ne!(steps[0].1, "m10-1-fragmented");
    assert_eq!(steps[0].2, &Reason::MakeRoom { domain: "ldom1".into() });
    assert_eq!((steps[1].0, steps[1].1, steps[1].2), ("ldom1", "m10-1-fragmented", &Reason::Guest));
    replay(&servers, &p);
}

#[test]
fn make_room_says_when_no_move_is_needed() {
    // Goal: RB-05: a guest that fits as things are gets a one-move plan.
    let servers = seed_make_room_cluster();
    let p = make_room(&input(&servers, BTreeMap::new(), Settings::default()), "ldom1", "m10-1-2").unwrap();
    assert_eq!(p.moves.len(), 1);
    assert!(p.notes[0].contains("no other move needed"), "{:?}", p.notes);
}

#[test]
fn make_room_refuses_what_moving_guests_cannot_cure() {
    // Goal: RB-05: a refusal for LM-07 (cpu-arch) is not capacity; make-room says so with the rule.
    let mut servers = seed_make_room_cluster();
    servers[1].cpu = sparc_t4();
    servers[1].threads_per_core = 2;
    let e = make_room(&input(&servers, BTreeMap::new(), Settings::default()), "ldom1", "m10-1-fragmented").unwrap_err();
    match &e {
        MakeRoomError::NotCapacity(v) => assert!(v.iter().any(|x| x.rule.to_string() == "LM-07"), "{e}"),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("LM-07"));
}

#[test]
fn make_room_fails_with_reasons_when_the_others_have_no_room_either() {
    // Goal: RB-05: when ldom3 and ldom2 can go nowhere (no other host), make-room fails naming the fit it could not reach.
    let servers = seed_make_room_cluster();
    let two = [servers[0].clone(), servers[1].clone()];
    let full_source = {
        // m10-1-1 with every free core taken by a stub, so nothing can move there.
        let mut s = two[0].clone();
        add_domain(&mut s, plain_domain("stub", tern_model::DomainKind::Guest));
        bind_cores(&mut s, "stub", &(8..16).collect::<Vec<_>>());
        s
    };
    let servers = vec![full_source, two[1].clone()];
    let e = make_room(&input(&servers, BTreeMap::new(), Settings::default()), "ldom1", "m10-1-fragmented").unwrap_err();
    assert!(matches!(e, MakeRoomError::NoSequence { .. }), "{e}");
    assert!(e.to_string().contains("LM-09"), "{e}");
}

#[test]
fn make_room_may_move_away_the_anti_affinity_mate_that_blocks_the_guest() {
    // Goal: RB-05 with RB-03: ldom3 shares ldom1's must anti-affinity group; moving ldom3 off the target both makes room and mends the rule.
    let servers = seed_make_room_cluster();
    let anti = GuestRules { anti_affinity: group("db", Strength::Must), ..Default::default() };
    let r = rules(&[("ldom1", anti.clone()), ("ldom3", anti.clone())]);
    let p = make_room(&input(&servers, r, Settings::default()), "ldom1", "m10-1-fragmented").unwrap();
    assert_eq!(p.moves.iter().map(|m| m.domain.as_str()).collect::<Vec<_>>(), ["ldom3", "ldom1"], "{p:#?}");
    // With ldom2 in the group too, it would have to leave as well: ldom2 and ldom3 both go, or no plan.
    let r = rules(&[("ldom1", anti.clone()), ("ldom2", anti.clone()), ("ldom3", anti)]);
    match make_room(&input(&servers, r, Settings::default()), "ldom1", "m10-1-fragmented") {
        Ok(p) => {
            let after = replay(&servers, &p);
            let frag = after.iter().find(|s| s.name == "m10-1-fragmented").unwrap();
            assert!(frag.domain("ldom2").is_none() && frag.domain("ldom3").is_none(), "{p:#?}");
        }
        Err(e) => assert!(e.to_string().contains("RB-03") || e.to_string().contains("no sequence"), "{e}"),
    }
}

#[test]
fn make_room_never_moves_a_frozen_guest() {
    // Goal: RB-05 with RB-03: ldom3 in cooldown; the plan moves ldom2 instead (more costly, still legal).
    let servers = seed_make_room_cluster();
    let r = rules(&[("ldom3", GuestRules { frozen: Some("cooldown".into()), ..Default::default() })]);
    let p = make_room(&input(&servers, r, Settings::default()), "ldom1", "m10-1-fragmented").unwrap();
    assert_eq!(p.moves[0].domain, "ldom2", "{p:#?}");
    replay(&servers, &p);
}

fn plan_of(servers: &[Server], level: u8) -> Plan {
    plan(&input(servers, BTreeMap::new(), Settings { level: Level::new(level).unwrap(), ..Settings::default() }))
}

#[test]
fn generated_clusters_rebalance_with_every_move_legal() {
    // Goal: on generated fragmented clusters, every planned move binds in order and the imbalance falls.
    for seed in 0..4 {
        let servers = generate(seed, 12, 120);
        let p = plan_of(&servers, 4);
        assert!(p.imbalance_after_ppm <= p.imbalance_before_ppm, "seed {seed}: {p:#?}");
        let after = replay(&servers, &p);
        let real = imbalance_ppm(&input(&after, BTreeMap::new(), Settings::default()));
        assert_eq!(real, p.imbalance_after_ppm, "seed {seed}: the plan's figure is what the servers show");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_plan_is_a_function_of_its_input_not_of_host_order(seed in 0u64..10_000, rotate in 0usize..8) {
        // Goal: determinism: the same cluster listed in another order gives the same plan.
        let servers = generate(seed, 8, 40 + (seed % 40) as usize);
        let mut shuffled = servers.clone();
        shuffled.rotate_left(rotate % servers.len());
        prop_assert_eq!(plan_of(&servers, 5), plan_of(&shuffled, 5));
    }

    #[test]
    fn plans_never_raise_imbalance_and_always_bind(seed in 0u64..10_000) {
        // Goal: every move of a plan lowers the score it is judged by, and binds where it says.
        let servers = generate(seed, 6, 30 + (seed % 30) as usize);
        let p = plan_of(&servers, 5);
        prop_assert!(p.imbalance_after_ppm <= p.imbalance_before_ppm);
        replay(&servers, &p);
    }
}

#[test]
fn random_guest_is_deterministic() {
    // Goal: the generator is a function of its seed (the benchmark's figures depend on it).
    let (a, b) = (random_guest("x".into(), &mut Rng(42)), random_guest("x".into(), &mut Rng(42)));
    assert_eq!((a.cores, a.blocks, a.cpu_pct), (b.cores, b.blocks, b.cpu_pct));
}

// ---- UC-2 growth (RB-06) -------------------------------------------------------------

fn grown(servers: &[Server], domain: &str, growth: Growth) -> Result<Plan, MakeRoomError> {
    grow(&input(servers, BTreeMap::new(), Settings::default()), domain, &growth)
}

#[test]
fn a_guest_with_room_on_its_host_grows_in_place() {
    // Goal: RB-06: ldom1 (4 of m10-1-1's 16 cores, 8 free) grows to 8 cores and 40G where it is: no move.
    let servers = vec![seed_source(), seed_target()];
    let p = grown(&servers, "ldom1", Growth { cores: Some(8), memory: Some(40 * GIB) }).unwrap();
    assert!(p.moves.is_empty(), "{p:#?}");
    assert!(p.notes[0].contains("grow in place on m10-1-1"), "{:?}", p.notes);
}

#[test]
fn a_guest_its_host_cannot_grow_moves_where_it_then_can() {
    // Goal: RB-06: 40 cores fit on no M10-1; the plan moves ldom1 to the 96-core host, where it then has the room.
    let servers = vec![seed_source(), seed_target(), common::cluster::empty_host("big")];
    let p = grown(&servers, "ldom1", Growth { cores: Some(40), memory: None }).unwrap();
    let moves: Vec<(&str, &str)> = p.moves.iter().map(|m| (m.domain.as_str(), m.target.as_str())).collect();
    assert_eq!(moves, [("ldom1", "big")], "{p:#?}");
    assert!(p.notes.iter().any(|n| n.contains("then grow ldom1 on big to cores=40")), "{:?}", p.notes);
    replay(&servers, &p);
}

#[test]
fn the_cheaper_way_to_room_wins_moving_a_small_neighbour_away() {
    // Goal: RB-06 with RB-02: ldom1 needs the cores a small, calm guest holds on m10-1-1; moving that guest away
    // costs less than moving ldom1's 16G, so the plan moves the neighbour and ldom1 grows in place.
    let mut source = seed_source();
    let mut small = guest_domain("tiny", 5002);
    small.vdisks.clear();
    small.workload.dirty_mib_per_s = 1;
    add_domain(&mut source, small);
    bind_cores(&mut source, "tiny", &(8..16).collect::<Vec<_>>());
    lay_out_after_primary(
        &mut source,
        &[("ldom1", 248 * MIB), ("ldom1", 16136 * MIB), ("tiny", 4 * GIB), ("", 35320 * MIB)],
    );
    assert_valid(&source);
    let servers = vec![source, seed_target()];
    let p = grown(&servers, "ldom1", Growth { cores: Some(8), memory: None }).unwrap();
    let moves: Vec<&str> = p.moves.iter().map(|m| m.domain.as_str()).collect();
    assert_eq!(moves, ["tiny"], "{p:#?}");
    assert_eq!(p.moves[0].reason, Reason::MakeRoom { domain: "ldom1".into() });
    assert!(p.notes.iter().any(|n| n.contains("then grow ldom1 on m10-1-1")), "{:?}", p.notes);
    replay(&servers, &p);
}

#[test]
fn a_growth_no_sequence_of_moves_allows_is_refused_naming_rb06() {
    // Goal: RB-06: 20 cores fit on no server of the seed: refused with the rule and the numbers; bad input is invalid.
    let servers = vec![seed_source(), seed_target()];
    let e = grown(&servers, "ldom1", Growth { cores: Some(20), memory: None }).unwrap_err();
    assert!(matches!(e, MakeRoomError::NoSequence { .. }) && e.to_string().contains("RB-06"), "{e}");
    assert!(e.to_string().contains("16 more core(s)"), "{e}");
    assert!(matches!(grown(&servers, "nope", Growth { cores: Some(8), memory: None }), Err(MakeRoomError::Invalid(_))));
    assert!(matches!(grown(&servers, "ldom1", Growth::default()), Err(MakeRoomError::Invalid(_))));
}
