//! HA-02 against real parts: Debian's `fence_ipmilan` powers off a server simulated
//! by OpenIPMI's `ipmi_sim` (see `tern_tests::bmc`).

use tern_ha::FenceOutcome;
use tern_tests::bmc::{Bmc, PASSWORD};

#[tokio::test]
async fn fence_ipmilan_powers_the_simulated_server_off_and_status_confirms_it() {
    // Goal: HA-02 with real parts: off through the BMC, confirmed off by status; the chassis saw "set power 0".
    let bmc = Bmc::start("true");
    bmc.wait_answering().await;
    assert_eq!(bmc.fence(PASSWORD).fence().await, FenceOutcome::ConfirmedOff { attempt: 1 });
    assert_eq!(bmc.file("power").trim(), "0");
    assert!(bmc.file("calls.log").contains("set power 0"), "{}", bmc.file("calls.log"));
}

#[tokio::test]
async fn a_wrong_bmc_password_confirms_nothing_and_leaves_the_power_on() {
    // Goal: a fence that cannot log in is no fence: nothing may restart, and the server stays on.
    let bmc = Bmc::start("true");
    bmc.wait_answering().await;
    let FenceOutcome::NotConfirmed { last, .. } = bmc.fence("wrong").fence().await else { panic!("fenced") };
    assert!(!last.is_empty());
    assert_ne!(bmc.file("power").trim(), "0");
}
