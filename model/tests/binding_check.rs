//! Table tests of `Server::check_binding`, the one binding check that preflight,
//! `bind_domain` and the replicated state machine share (LM-06, LM-09, LM-12, LM-13).

mod common;

use common::*;
use std::collections::BTreeSet;
use tern_model::units::{GIB, MIB};
use tern_model::{
    BindError, Binding, BindingError, Console, DomainKind, GuestShape, Range, Reserved, Resource, Rule, Server,
};

const A: u64 = AFTER_PRIMARY_PA;

/// The seed's target with, after the control domain: two adjacent free 4G rows, ldom2's
/// 2G, then free memory; ldom2 on core 8 with console 5000; core 15 not activated.
fn target() -> Server {
    let mut t = seed_target();
    let mut ldom2 = plain_domain("ldom2", DomainKind::Guest);
    ldom2.console = Some(Console { service: VCC.into(), port: 5000, logging: true });
    add_domain(&mut t, ldom2);
    bind_cores(&mut t, "ldom2", &[8]);
    lay_out_after_primary(&mut t, &[("", 4 * GIB), ("", 4 * GIB), ("ldom2", 2 * GIB), ("", 45560 * MIB)]);
    t.cores.iter_mut().find(|c| c.cid == 15).unwrap().activated = false;
    assert_valid(&t);
    t
}

/// Core 10 (strands 20, 21), [A+10G, A+11G) and console port 5001 are promised elsewhere.
fn reserved() -> Reserved {
    Reserved {
        strands: BTreeSet::from([20, 21]),
        memory: vec![Range::new(A + 10 * GIB, GIB)],
        console_ports: BTreeSet::from([5001]),
        domain_names: BTreeSet::from(["ldom3".to_string()]),
    }
}

/// A guest of two whole cores with blocks of 1G and 2G and a console on the VCC.
fn shape() -> GuestShape {
    GuestShape { strands: 4, whole_cores: true, blocks: vec![GIB, 2 * GIB], console_service: Some(VCC.into()) }
}

/// Cores 4-5, 1G at A and 2G across the two free rows, console 5002.
fn good() -> Binding {
    Binding {
        domain: "ldom1".into(),
        whole_cores: true,
        cids: vec![4, 5],
        strands: vec![8, 9, 10, 11],
        memory: vec![Range::new(A, GIB), Range::new(A + 3 * GIB, 2 * GIB)],
        console_port: Some(5002),
    }
}

fn cpus(cids: &[u32], strands: &[u32]) -> Binding {
    Binding { cids: cids.to_vec(), strands: strands.to_vec(), ..good() }
}

fn second_range(r: Range) -> Binding {
    Binding { memory: vec![Range::new(A, GIB), r], ..good() }
}

fn port(p: Option<u16>) -> Binding {
    Binding { console_port: p, ..good() }
}

#[test]
fn check_binding_accepts_a_range_spanning_two_adjacent_free_rows() {
    // Goal: free memory is the merged free rows (as free_ranges and bind_domain see
    // it), so a 2G range across two adjacent free 4G rows passes, and then binds.
    let mut t = target();
    assert_eq!(t.check_binding(&shape(), &good(), &reserved()), Ok(()));
    let mut guest = guest_domain("ldom1", 5999);
    guest.vdisks.clear();
    guest.vnets.clear();
    t.bind_domain(guest, &good()).expect("the checked binding binds");
    assert_eq!(t.memory_of("ldom1"), vec![Range::new(A, GIB), Range::new(A + 3 * GIB, 2 * GIB)]);
    assert_valid(&t);
}

#[test]
fn check_binding_refuses_each_unavailable_resource_and_wrong_shape() {
    // Goal: every refusal names its resource, its rule and the numbers: strands bound,
    // reserved, missing or on a core without licence (LM-06); memory on bound rows,
    // reservations or outside the table (LM-09); console ports outside the VCC, used
    // or reserved (LM-13); shapes with another vCPU count, partial cores, other block
    // sizes or no port (LM-09, LM-12, LM-13); bindings that contradict themselves.
    let ldom2_mem = format!("overlaps block {} bound to ldom2", Range::new(A + 8 * GIB, 2 * GIB));
    let reservation = format!("overlaps {}, which is reserved", Range::new(A + 10 * GIB, GIB));
    let cases: Vec<(&str, Binding, Resource, Option<Rule>, &str)> = vec![
        (
            "strand bound",
            cpus(&[5, 8], &[10, 11, 16, 17]),
            Resource::Strand,
            Some(Rule::Lm(6)),
            "CPU 16 is bound to ldom2",
        ),
        (
            "strand reserved",
            cpus(&[5, 10], &[10, 11, 20, 21]),
            Resource::Strand,
            Some(Rule::Lm(6)),
            "CPU 20 is reserved",
        ),
        (
            "core not activated",
            cpus(&[5, 15], &[10, 11, 30, 31]),
            Resource::Strand,
            Some(Rule::Lm(6)),
            "CPU 30 is on core 15, which has no activation licence",
        ),
        (
            "strand missing",
            cpus(&[5, 99], &[10, 11, 198, 199]),
            Resource::Strand,
            Some(Rule::Lm(6)),
            "CPU 198 does not exist",
        ),
        (
            "range over bound memory",
            second_range(Range::new(A + 7 * GIB, 2 * GIB)),
            Resource::Memory,
            Some(Rule::Lm(9)),
            &ldom2_mem,
        ),
        (
            "range over the control domain",
            second_range(Range::new(PRIMARY_PA, 2 * GIB)),
            Resource::Memory,
            Some(Rule::Lm(9)),
            "bound to primary",
        ),
        (
            "range over a reservation",
            second_range(Range::new(A + 10 * GIB + 512 * MIB, 2 * GIB)),
            Resource::Memory,
            Some(Rule::Lm(9)),
            &reservation,
        ),
        (
            "range past the memory table",
            second_range(Range::new(A + AFTER_PRIMARY_SIZE, 2 * GIB)),
            Resource::Memory,
            Some(Rule::Lm(9)),
            "is not inside one free range",
        ),
        (
            "port out of range",
            port(Some(6001)),
            Resource::ConsolePort,
            Some(Rule::Lm(13)),
            "console port 6001 is outside VCC primary-vcc0's range 5000-6000",
        ),
        (
            "port used",
            port(Some(5000)),
            Resource::ConsolePort,
            Some(Rule::Lm(13)),
            "console port 5000 is used by ldom2",
        ),
        ("port reserved", port(Some(5001)), Resource::ConsolePort, Some(Rule::Lm(13)), "console port 5001 is reserved"),
        (
            "vCPU count",
            cpus(&[4], &[8, 9]),
            Resource::Shape,
            Some(Rule::Lm(12)),
            "the guest has 4 CPUs; the binding holds 2",
        ),
        (
            "part of a core for a whole-core guest",
            cpus(&[4, 5, 6], &[8, 9, 10, 12]),
            Resource::Shape,
            Some(Rule::Lm(12)),
            "takes 1 of core 5's 2 threads",
        ),
        (
            "block sizes",
            second_range(Range::new(A + 3 * GIB, GIB)),
            Resource::Shape,
            Some(Rule::Lm(9)),
            "blocks are [1G, 2G]; the binding's ranges are [1G, 1G]",
        ),
        ("no port for a console", port(None), Resource::Shape, Some(Rule::Lm(13)), "the binding must give it a port"),
        (
            "CIDs that are not the strands' cores",
            cpus(&[4], &[8, 9, 10, 11]),
            Resource::Form,
            None,
            "names CIDs [4] but its CPUs are on cores [4, 5]",
        ),
        ("a strand twice", cpus(&[4, 5], &[8, 8, 9, 10]), Resource::Form, None, "CPU 8 appears twice"),
        ("overlapping ranges", second_range(Range::new(A + 512 * MIB, 2 * GIB)), Resource::Form, None, "overlap"),
    ];
    let t = target();
    for (what, binding, resource, rule, needle) in cases {
        let e = t.check_binding(&shape(), &binding, &reserved()).expect_err(what);
        assert_eq!((e.resource(), e.rule()), (resource, rule), "{what}: {e}");
        assert!(e.to_string().contains(needle), "{what}: {e}");
    }
}

#[test]
fn check_binding_refuses_a_port_for_a_guest_without_console_and_a_missing_vcc() {
    // Goal: LM-13: a port needs a console, and the console's VCC must exist here.
    let t = target();
    let no_console = GuestShape { console_service: None, ..shape() };
    let e = t.check_binding(&no_console, &good(), &reserved()).unwrap_err();
    assert_eq!(e, BindingError::ConsoleShape { guest_service: None, port: Some(5002) });
    let other_vcc = GuestShape { console_service: Some("other-vcc".into()), ..shape() };
    let e = t.check_binding(&other_vcc, &good(), &reserved()).unwrap_err();
    assert_eq!(e, BindingError::NoVcc { service: "other-vcc".into() });
}

#[test]
fn bind_domain_refuses_what_check_binding_refuses_and_changes_nothing() {
    // Goal: bind_domain runs the same check: a used console port (here the domain's
    // own port, kept when the binding gives none) or a strand twice is refused, all or
    // nothing.
    let t = target();
    let guest = plain_domain("ldom1", DomainKind::Guest);
    let with_console = |p| tern_model::Domain {
        console: Some(Console { service: VCC.into(), port: p, logging: true }),
        ..guest.clone()
    };
    let cases = [
        (with_console(5000), port(None), BindingError::ConsolePortUsed { port: 5000, domain: "ldom2".into() }),
        (with_console(5999), cpus(&[4, 5], &[8, 8, 9, 10]), BindingError::DuplicateStrand { strand: 8 }),
        (guest.clone(), port(Some(5002)), BindingError::ConsoleShape { guest_service: None, port: Some(5002) }),
    ];
    for (domain, binding, want) in cases {
        let mut s = t.clone();
        assert_eq!(s.bind_domain(domain, &binding), Err(BindError::Binding(want)));
        assert_eq!(s, t);
    }
}

mod contested {
    //! `Reserved::contested_by` stands in for every resource of the other reservations.
    use super::*;
    use proptest::prelude::*;

    const STEP: u64 = 256 * MIB;

    fn ranges() -> impl Strategy<Value = Vec<Range>> {
        prop::collection::vec((0u64..60, 1u64..9).prop_map(|(k, n)| Range::new(A + k * STEP, n * STEP)), 0..4)
    }

    fn other() -> impl Strategy<Value = Binding> {
        (prop::collection::btree_set(0u32..32, 0..7), ranges(), prop::option::of(5000u16..5006), 0usize..3).prop_map(
            |(strands, memory, console_port, name)| Binding {
                domain: ["ldom1", "ldom3", "ldom7"][name].into(),
                whole_cores: true,
                cids: strands.iter().map(|s| s / 2).collect::<BTreeSet<_>>().into_iter().collect(),
                strands: strands.into_iter().collect(),
                memory,
                console_port,
            },
        )
    }

    fn candidate() -> impl Strategy<Value = Binding> {
        (0u32..16, 0u32..16, 0u64..60, 0u64..60, 5000u16..5006).prop_map(|(c1, c2, m1, m2, port)| Binding {
            cids: vec![c1, c2],
            strands: vec![2 * c1, 2 * c1 + 1, 2 * c2, 2 * c2 + 1],
            memory: vec![Range::new(A + m1 * STEP, GIB), Range::new(A + m2 * STEP, 2 * GIB)],
            console_port: Some(port),
            ..good()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn a_binding_is_judged_the_same_against_what_it_contests_as_against_everything_held(
            others in prop::collection::vec(other(), 0..12),
            binding in candidate(),
        ) {
            // Goal: check_binding gives the same answer (and the same refusal) whether it sees every resource the
            // other reservations hold or only those the binding contests.
            let t = target();
            let mut all = Reserved::default();
            for o in &others {
                all.add(o);
            }
            let contested = Reserved::contested_by(&binding, &others);
            prop_assert_eq!(t.check_binding(&shape(), &binding, &all), t.check_binding(&shape(), &binding, &contested));
        }
    }
}
