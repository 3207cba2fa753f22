//! One simulated server's BMC for the HA tests: OpenIPMI's `ipmi_sim` on loopback
//! (IPMI v2.0 lanplus, user `admin`), whose `chassis_control` script keeps the
//! server's power in a file and runs a given shell command when the power goes off.
//! `./dev deps` installs `fence-agents`, `openipmi` and `ipmitool` when missing;
//! without them these tests fail, saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const FENCE_IPMILAN: &str = "/usr/sbin/fence_ipmilan";
pub const IPMI_SIM: &str = "/usr/bin/ipmi_sim";
pub const IPMITOOL: &str = "/usr/bin/ipmitool";
/// The BMC's admin password.
pub const PASSWORD: &str = "s3cret";

/// A running `ipmi_sim`; killed on drop.
pub struct Bmc {
    pub dir: tempfile::TempDir,
    pub port: u16,
    sim: std::process::Child,
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.sim.kill();
        let _ = self.sim.wait();
    }
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} (./dev deps installs fence-agents, openipmi and ipmitool)"
    );
}

/// A UDP port the OS says is free now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Bmc {
    /// Starts a BMC whose chassis runs `on_power_off` (shell) when told to power off.
    pub fn start(on_power_off: &str) -> Self {
        require(FENCE_IPMILAN, "fence-agents");
        require(IPMI_SIM, "openipmi");
        require(IPMITOOL, "ipmitool");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_udp_port();
        // ipmi_sim asks `SCRIPT MC get power` (answer `power:1`) and `SCRIPT MC set power 0`.
        let chassis = format!(
            "#!/bin/sh\necho \"$@\" >> {d}/calls.log\ncase \"$2\" in\n  get) echo \"power:$(cat {d}/power 2>/dev/null || echo 1)\" ;;\n  set) if [ \"$3\" = power ]; then echo \"$4\" > {d}/power; if [ \"$4\" = 0 ]; then {{ {on_power_off}\n }} >> {d}/power-off.log 2>&1; fi; fi ;;\nesac\nexit 0\n"
        );
        write_exec(&dir.path().join("chassis.sh"), &chassis);
        let lan = format!(
            "name \"srv\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n    allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{d}/chassis.sh 0x20\"\n  user 2 true \"admin\" \"{PASSWORD}\" admin 10 none md2 md5 straight\n"
        );
        std::fs::write(dir.path().join("lan.conf"), lan).unwrap();
        let emu =
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n";
        std::fs::write(dir.path().join("bmc.emu"), emu).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let sim = std::process::Command::new(IPMI_SIM)
            .args(["-c", &format!("{d}/lan.conf"), "-f", &format!("{d}/bmc.emu"), "-s", &format!("{d}/state"), "-n"])
            .stdout(std::fs::File::create(dir.path().join("sim.log")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting ipmi_sim");
        Self { dir, port, sim }
    }

    /// The fence of this BMC's server, with `password`.
    pub fn fence(&self, password: &str) -> tern_ha::PowerFence {
        tern_ha::PowerFence {
            agent: PathBuf::from(FENCE_IPMILAN),
            ip: "127.0.0.1".into(),
            ipport: Some(self.port),
            username: "admin".into(),
            password: password.into(),
            lanplus: true,
            cipher: Some(3),
            deadline_ms: 20_000,
            attempts: 1,
        }
    }

    /// A file of the BMC's folder (`power`, `calls.log`, `power-off.log`, `sim.log`).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until the simulator answers a power status over lanplus.
    pub async fn wait_answering(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let status = tokio::process::Command::new(IPMITOOL)
                .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "admin", "-P", PASSWORD, "-N", "1", "-R", "1", "chassis", "power", "status"])
                .output()
                .await;
            if status.is_ok_and(|o| o.status.success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ipmi_sim did not answer on port {}: {}", self.port, self.file("sim.log"));
    }
}
