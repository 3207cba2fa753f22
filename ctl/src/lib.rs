//! `ternctl`, the command line of tern. Verbs follow `ldm` where one exists
//! (`list-devices`, `migrate-domain`, `list-domain`), so admins keep their habits.
//!
//! Exit codes: 0 success; 1 the answer is "no" (a check found violations);
//! 2 the question could not be asked (unreadable files, unknown names, bad flags).

pub mod certs;
pub mod check;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod dist;
pub mod ha;
pub mod import;
pub mod layouts;
pub mod list;
pub mod local;
pub mod migrate;
pub mod rebalance;
pub mod resize;
pub mod top;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The exit code for a "no" answer (violations found).
pub const EXIT_NO: i32 = 1;
/// The exit code for a question that could not be asked.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "ternctl",
    version = tern_dist::LONG_VERSION,
    about = "Command line of tern: live migration and HA for Oracle VM Server for SPARC, in ldm's verbs",
    long_about = "Command line of tern: live migration and HA for Oracle VM Server for SPARC.\n\n\
Verbs follow ldm. Commands that take --layout read layout files (TOML descriptions of \
servers, see deploy/layouts/) and answer offline, before any agent runs.\n\n\
Exit codes: 0 success, 1 the answer is no (violations found), 2 bad input."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub agent: client::AgentArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where layouts come from: files, a folder of them, or both.
#[derive(clap::Args, Debug, Clone)]
pub struct LayoutArgs {
    /// A layout file; its file name (stem) is the server's host name. Repeatable.
    #[arg(long = "layout", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A folder whose *.toml files are all layouts (e.g. deploy/layouts).
    #[arg(long = "layouts", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Offline what-if: could DOMAIN live-migrate to TARGET? Runs every preflight rule
    /// (LM-01, LM-03..LM-11) on layout files and prints the binding a migration would
    /// reserve (CIDs, PA ranges, console port), or one line per violated rule.
    #[command(after_help = "Examples:\n  ternctl check --layouts deploy/layouts ldom1 m10-1-2\n  \
ternctl check --layout a.toml --layout b.toml ldom1 b:ldom9\n\n\
Exit codes: 0 the migration would pass; 1 violations (one line per rule); 2 bad input: \
an unreadable or invalid layout, a DOMAIN no layout holds (also with --source), an unknown \
host, a malformed TARGET.")]
    Check {
        #[command(flatten)]
        layouts: LayoutArgs,
        /// The source server's host name; needed only when several layouts hold DOMAIN
        /// (every server has a `primary`).
        #[arg(long, value_name = "HOST")]
        source: Option<String>,
        /// The guest domain to move; the layout that holds it is the source.
        domain: String,
        /// The target's host name (a layout's stem), optionally `:NEWNAME` (OP-05).
        /// A `user@` prefix is accepted and ignored offline.
        target: String,
    },
    /// List servers' resources as `ldm list-devices` does (OP-07): from layout files
    /// with --layout/--layouts, else from the cluster.
    ListDevices {
        /// All resources, bound ones too (as ldm's -a); without it only free ones.
        #[arg(short = 'a')]
        all: bool,
        /// Resource kinds: memory, core (default: both).
        #[arg(value_parser = ["memory", "core"])]
        kinds: Vec<String>,
        /// Only this host (cluster mode).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        #[command(flatten)]
        layouts: LayoutArgs,
    },
    /// List domains across the cluster, as `ldm list-domain` does. With -o, only the
    /// answering agent's server (or --host), as ldm answers for one server.
    ListDomain {
        /// Only this host.
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// status (OP-06: OPERATION, PROGRESS, SOURCE), core (CID, CPUSET) or console.
        #[arg(short = 'o', value_parser = ["status", "core", "console"])]
        output: Option<String>,
        /// Only this domain.
        domain: Option<String>,
    },
    /// Live-migrate DOMAIN to TARGET, run against the source's agent (OP-01). TARGET is
    /// [user@]host[:newname]: the user needs the "LDoms Management" or "System
    /// Administrator" profile on the target (OP-04); :newname renames it (OP-05).
    /// Without user@ and -p, the client certificate (which must hold one of those
    /// profiles) stands for the login: ternctl signs a ticket for exactly this move,
    /// good for 5 minutes. With -p and no user@, the user is root.
    #[command(after_help = "Examples:\n  ternctl migrate-domain ldom1 m10-1-2\n  \
ternctl migrate-domain -n -p /root/pass.txt ldom1 ldm_man@m10-1-2:ldom2\n\n\
Exit codes: 0 migrated (or the dry run passed); 1 refused, cancelled or rolled back; 2 bad input.")]
    MigrateDomain {
        /// Dry run (OP-02): every check and the reservation's feasibility; nothing moves
        /// and nothing stays reserved.
        #[arg(short = 'n')]
        dry_run: bool,
        /// Read the target password from FILE (OP-03); it must not be readable by group or others.
        #[arg(short = 'p', value_name = "FILE")]
        password_file: Option<PathBuf>,
        domain: String,
        target: String,
    },
    /// Cancel a running operation (OP-09): `cancel-operation migration DOMAIN`. The guest
    /// keeps running on its source and the reservation is released.
    CancelOperation {
        #[arg(value_parser = ["migration"])]
        operation: String,
        domain: String,
    },
    /// Migrations and other operations, newest first, with their results.
    ListOperations,
    /// A live view of the cluster for the admin without Grafana: leader and members,
    /// each host's free resources, running operations with progress bars, the
    /// rebalancer. Redraws every --interval on a terminal until Ctrl-C; prints one
    /// plain frame when standard output is not a terminal (or with --once). Needs the
    /// LDoms Review profile.
    #[command(after_help = TOP_HELP)]
    Top(top::TopArgs),
    /// Users who may migrate to the cluster's servers (OP-04).
    #[command(subcommand)]
    User(UserCommand),
    /// Hosts: hardware maintenance (UC-1: evacuate, restore) and HA (fence, up).
    #[command(subcommand)]
    Host(HostCommand),
    /// HA when a control domain is lost (SPEC HA-*): what the leader sees, and whether
    /// every guest would find a home after any single host loss.
    #[command(subcommand)]
    Ha(HaCommand),
    /// Set a guest's properties, as `ldm set-domain name=value ... ldom`. tern's own:
    /// ha-priority=high|medium|low|none (restart order on failover, HA-04; none never
    /// restarts; default medium); affinity-group=NAME and anti-affinity-group=NAME
    /// (RB-03: members of an affinity group run on one host, of an anti-affinity group
    /// on different hosts; an empty NAME leaves the group; `rebalance group` sets a
    /// group's strength, must by default).
    #[command(after_help = "Examples:\n  ternctl set-domain ha-priority=high ldom1\n  \
ternctl set-domain anti-affinity-group=db ldom1\n  ternctl set-domain affinity-group= ldom1")]
    SetDomain {
        /// name=value pairs, then the domain.
        #[arg(required = true, num_args = 2.., value_name = "NAME=VALUE... DOMAIN")]
        args: Vec<String>,
    },
    /// UC-2 (RB-06): give a running guest N more whole cores where it runs, as `ldm
    /// add-core N ldom`. tern picks the lowest free CIDs, reserves them through the
    /// replicated state, then the guest's host adds them by name (`ldm add-core cid=`).
    /// Exit 1 when the host lacks the cores (`rebalance plan --grow` shows the moves
    /// that would make room).
    #[command(after_help = "Examples:\n  ternctl add-core 2 ldom1\n  ternctl --json add-core 1 ldom1")]
    AddCore(ResizeArgs),
    /// UC-2 (RB-06): the guest holds N whole cores afterwards, as `ldm set-core N ldom`
    /// (cores given back: its highest CIDs).
    #[command(after_help = "Example:\n  ternctl set-core 6 ldom1")]
    SetCore(ResizeArgs),
    /// UC-2: give N whole cores back (its highest CIDs), as `ldm remove-core N ldom`.
    RemoveCore(ResizeArgs),
    /// UC-2 (RB-06): give a guest SIZE more memory where it runs, as `ldm add-memory
    /// SIZE ldom` (rounded up to 4M): one free range if one holds it all, else free
    /// ranges in address order, reserved first, then added by name (`mblock=PA:SIZE`).
    #[command(after_help = "Examples:\n  ternctl add-memory 8G ldom1\n  ternctl add-memory 512M ldom1")]
    AddMemory(ResizeArgs),
    /// UC-2 (RB-06): the guest holds SIZE of memory afterwards, as `ldm set-memory SIZE
    /// ldom` (memory given back: from its highest addresses down).
    #[command(after_help = "Example:\n  ternctl set-memory 24G ldom1")]
    SetMemory(ResizeArgs),
    /// UC-2: give SIZE of memory back (from its highest addresses), as `ldm
    /// remove-memory SIZE ldom`.
    RemoveMemory(ResizeArgs),
    /// Load-based rebalancing (SPEC RB-01..RB-05): plans made with the full preflight and
    /// exact memory fitting, kept with ids, applied as ordinary migrations; auto mode.
    #[command(subcommand)]
    Rebalance(RebalanceCommand),
    /// The simulated servers (kind = "sim"): what their BMC would do.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Start a local 3-agent cluster, show the domains, dry-run and then live-migrate
    /// ldom1 to m10-1-2 with progress, print the report; then kill m10-1-2's agent,
    /// confirm its server off and watch ldom1 restart elsewhere (HA); and stop.
    Demo(demo::DemoArgs),
    /// List virtual services (VDS volumes, VSW, VCC) per host, as `ldm list-services`.
    ListServices {
        /// Only this host.
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
    },
    /// Turn captured `ldm ... -p` outputs of a real server into a layout file, so
    /// `ternctl check` works on it. What ldm does not print is passed as flags.
    #[command(after_help = "Example:\n  ternctl import-ldm --list-domain ld.txt --list-bindings lb.txt \\\n    \
--list-devices dev.txt --list-services svc.txt --model \"SPARC M10-1\" --cpu \"SPARC64 X+\" \\\n    \
--frequency-mhz 3200 --firmware XCP2210 --os \"Solaris 11.1.17.5.0\" --shared /dev/dsk/c0t6000 -o m10-1-1.toml")]
    ImportLdm(import::ImportArgs),
    /// The Raft cluster: members, voter or learner, leader, term, commit index, host status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Who changed what, newest first: every change the cluster applied or refused,
    /// with the caller its certificate proved and the outcome (System Administrator).
    Audit(AuditArgs),
    /// The cluster's certificate authority and certificates (mutual TLS).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run a cluster of real ternd processes on this machine (simulated servers).
    #[command(subcommand)]
    LocalCluster(LocalCommand),
    /// Print ternctl's version and the git commit it was built from ("unknown" when
    /// built outside git, e.g. from a source tarball).
    Version,
    /// Print the completion script for SHELL to standard output.
    #[command(
        after_help = "Examples:\n  ternctl completions bash > ~/.local/share/bash-completion/completions/ternctl\n  \
ternctl completions zsh > ~/.zfunc/_ternctl    # with fpath+=(~/.zfunc) before compinit\n  \
ternctl completions fish > ~/.config/fish/completions/ternctl.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: dist::Shell,
    },
    /// Write the man pages into DIR: ternctl.1, one ternctl-COMMAND.1 per command (as
    /// git's: ternctl-check.1, ternctl-user-add.1) and ternd.1. Prints the paths.
    #[command(after_help = "Example:\n  ternctl man --dir /usr/local/share/man/man1")]
    Man {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// What `ternctl top`'s frame shows, column by column.
const TOP_HELP: &str = "\
The frame, read from the agent given by --agent (any member):
  header      the time (UTC), the agent asked and the member that answered; the
              leader, its Raft term and commit index, the number of members.
  MEMBER      a Raft member (* the leader); ROLE voter or learner.
  HEARD       time since the leader last heard the member's heartbeat (HA-01);
              - when not heard since it began leading.
  LAG         log entries the member is behind the commit index (known only when
              the agent asked is the leader; - otherwise).
  HOST        a server; STATUS up, suspect (heartbeats missed), lost (HA-01),
              fenced (powered off, HA-02) or maintenance (evacuated, UC-1).
  FREE-CORES  whole cores with no strand bound or reserved / activated cores.
  FREE-MEM    memory neither bound nor reserved, in ldm's units (16G, 512M).
  LARGEST     the largest contiguous free memory range (what LM-09 fitting needs).
  GUESTS      guest domains in the host's inventory (not the control, service or
              I/O domains); an incoming migration's copy counts on its target.
  RESV        reservations active on the host: resources promised to a migration,
              restart or resize but not yet bound.
  RUNNING     operations not ended: ID, KIND (migration, evacuation, failover,
              resize; -n a dry run), DOMAIN, ROUTE (source -> target), PHASE
              (preparing, reserved, transferring, committing) and, for a
              migration, its transfer PROGRESS (OP-06).
  RECENT      the last 3 operations that ended, with their result.
  REBALANCE   the imbalance (RB-01) against the level's threshold, auto mode, the
              rounds it has stayed above, moves in flight, and each plan applying
              with its moves' states.
Lines starting with !! say what could not be read this time.

Examples:
  ternctl top
  ternctl top --interval 500ms
  ternctl top --once | grep lost
  ternctl --json top --iterations 5 --interval 10s

Exit codes: 0 after Ctrl-C or the last frame; 2 when the agent cannot be reached
(a plain frame: --once, --iterations, not a terminal) or refuses the certificate
(PERMISSION_DENIED). On a terminal an unreachable agent is shown in the frame and
asked again every interval.";

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Live-migrate every guest off HOST (each to the server that fits it best), report
    /// any guest that cannot move and why, and mark HOST in maintenance.
    Evacuate {
        host: String,
        /// root's password on the targets, from FILE (else asked for).
        #[arg(short = 'p', value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Mark HOST up again and bring back the guests evacuated from it.
    Restore {
        host: String,
        #[arg(short = 'p', value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// HA-02 by hand: after checking that a lost HOST's server is powered off (at its
    /// XSCF/ILOM, or in the machine room), record it fenced so its guests restart
    /// elsewhere. Audited. Wrong here means guests running twice on shared disks.
    #[command(after_help = "Example:\n  ternctl host fence --confirm-off m10-1-1")]
    Fence {
        /// Required: you confirm the server is off.
        #[arg(long, required = true)]
        confirm_off: bool,
        host: String,
    },
    /// Return a fenced (or lost) HOST to service. Guests restarted elsewhere stay
    /// there: its agent unbinds its old copies and never starts them (HA-09).
    Up { host: String },
}

#[derive(Subcommand, Debug)]
pub enum RebalanceCommand {
    /// Make a plan: the moves that lower the imbalance (RB-01, RB-02), each with its
    /// binding (CIDs, PA ranges), its cost (migration time, downtime) and the imbalance
    /// after it. Against a cluster the plan is kept with an id (apply it with `apply ID`);
    /// with --layouts it is computed offline and nothing is kept.
    /// With --grow DOMAIN cores=N memory=SIZE: the moves after which DOMAIN can grow
    /// to that size (UC-2, RB-06): none if its host has the room now, else its own move
    /// or moves of its neighbours, whichever is fewer and cheaper.
    #[command(after_help = "Examples:\n  ternctl rebalance plan\n  ternctl rebalance plan --level 5\n  \
ternctl rebalance plan --layouts deploy/layouts\n  ternctl rebalance plan --grow ldom1 cores=8 memory=32G\n\n\
Levels (vSphere DRS-style): 1 only mandatory moves (broken must-rules), 2 acts at imbalance 0.20, \
3 (default) 0.10, 4 0.05, 5 0.02.")]
    Plan {
        #[command(flatten)]
        layouts: LayoutArgs,
        /// 1 (mandatory moves only) to 5 (aggressive); default: the cluster's.
        #[arg(long)]
        level: Option<u8>,
        /// Plan for this guest's growth instead (give cores=N and/or memory=SIZE).
        #[arg(long, value_name = "DOMAIN")]
        grow: Option<String>,
        /// With --grow: cores=N (whole cores in all) and memory=SIZE (in all, e.g. 32G).
        #[arg(value_name = "NAME=VALUE", requires = "grow")]
        sizes: Vec<String>,
    },
    /// RB-05: the fewest moves of HOST's other guests (each itself legal) after which
    /// DOMAIN fits on HOST, when LM-09 fragmentation or too few free cores refuse it now;
    /// then DOMAIN's own move. Exit 1 when no such sequence exists.
    #[command(after_help = "Example:\n  ternctl rebalance make-room ldom1 m10-1-fragmented\n  \
ternctl rebalance make-room --layouts deploy/layouts ldom1 m10-1-fragmented")]
    MakeRoom {
        #[command(flatten)]
        layouts: LayoutArgs,
        domain: String,
        host: String,
    },
    /// Run a shown plan if the cluster is as it was when the plan was made (RB-04); if it
    /// changed, a new plan is made and shown instead (exit 1), to apply in turn.
    Apply { id: u64 },
    /// Stop an applying plan: moves not started are not made; running ones finish.
    Cancel { id: u64 },
    /// The policy, the imbalance now, rounds held (auto mode) and the recent plans with
    /// each move's state.
    Status {
        /// How many recent plans to show.
        #[arg(long, default_value_t = 5)]
        limit: u32,
        /// Show only this plan.
        #[arg(long)]
        plan: Option<u64>,
    },
    /// Turn automatic rebalancing on or off (System Administrator). On: the leader plans
    /// once the imbalance stayed above the level's threshold for hold-rounds rounds, and
    /// applies the plan itself.
    Auto {
        #[arg(value_parser = ["on", "off"])]
        on: String,
        #[arg(long)]
        level: Option<u8>,
    },
    /// Change the policy: level, max-moves, host-concurrency, cluster-concurrency,
    /// n-plus-one=on|off, cooldown=30m, hold-rounds, cpu-weight, memory-weight,
    /// max-downtime=5s, auto=on|off.
    #[command(after_help = "Example:\n  ternctl rebalance set level=4 cooldown=1h n-plus-one=on")]
    Set {
        #[arg(required = true, value_name = "NAME=VALUE")]
        pairs: Vec<String>,
    },
    /// How hard a group's rule binds: must (never broken), should (weighed), default.
    Group {
        name: String,
        #[arg(value_parser = ["must", "should", "default"])]
        strength: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HaCommand {
    /// Host states, time since each heartbeat, each failover's fence, restarts and
    /// waiting guests (from the leader). Exit 1 when a guest waits.
    Status,
    /// For each host: where its guests would restart were it lost now. Exit 1 when a
    /// guest with a priority would find no home (HA-05).
    Check,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// The simulated server loses power: every guest in its state file stops. Run by a
    /// simulated BMC's chassis control when a fence powers it off; its ternd must not run.
    PowerOff {
        /// The server's state file (DATA_DIR/sim-state.json).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
    },
    /// The simulated server's control domain fails (crashes, or is reset by its
    /// watchdog) while the server keeps power: guests that are its slaves
    /// (master=primary) stop when its failure-policy is stop; every other guest keeps
    /// running (HA-08). Its ternd must not run.
    CrashControlDomain {
        /// The server's state file (DATA_DIR/sim-state.json).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add (or with --replace, replace) a user; the password is asked for or read with -p.
    Add {
        name: String,
        /// A rights profile, e.g. "LDoms Management" or "System Administrator". Repeatable.
        #[arg(long = "profile", value_name = "PROFILE", required = true)]
        profiles: Vec<String>,
        #[arg(short = 'p', value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[arg(long)]
        replace: bool,
    },
    /// Remove a user: they may no longer migrate to the cluster's servers.
    Remove { name: String },
    /// The users and their rights profiles.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, roles, leader, term, commit and applied index, host status.
    Status,
    /// Take a member out of the cluster for good (System Administrator), as `etcdctl
    /// member remove`: refused while its host holds guests (`host evacuate` first),
    /// reservations or running operations. Its host's record goes, the leader removes
    /// it from the Raft membership (a voter is replaced by a caught-up learner), and its
    /// agent may not join again until `cluster add-member NAME`.
    RemoveMember {
        /// The member's host name (as `cluster status` lists it).
        name: String,
    },
    /// Let a removed member join again (System Administrator). Its agent joins through
    /// its own `join` list: at once if it is running, else when started.
    AddMember {
        /// The member's host name.
        name: String,
    },
    /// Cluster snapshots: the whole replicated state in one file, for `ternd --restore`.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save the leader's applied state (after confirming it leads and has applied every
    /// acknowledged write) to FILE, as `etcdctl snapshot save` (System Administrator).
    /// Written to FILE.part, synced, then renamed: FILE is whole or absent.
    Save {
        /// Where to write the snapshot; refused if it exists, unless --force.
        file: std::path::PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// `add-core N ldom`, `set-memory SIZE ldom`, ...: the amount, then the guest.
#[derive(clap::Args, Debug)]
pub struct ResizeArgs {
    /// Whole cores (N), or a size such as 8G or 512M (memory).
    #[arg(value_name = "N|SIZE")]
    pub amount: String,
    /// The guest (ldm's ldom).
    pub domain: String,
}

/// `ternctl audit`'s filters.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only changes of the last DURATION (e.g. 30m, 2h, 7d) or since MS (ms since the epoch).
    #[arg(long, value_name = "DURATION|MS")]
    pub since: Option<String>,
    /// Only changes by this user (or agent:HOST).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Include the agents' own bookkeeping (inventory reports, lease renewals, ...).
    #[arg(long)]
    pub agents: bool,
    /// Instead: the calls the agent answering (--agent) refused before they reached
    /// the cluster (no rights, revoked or unknown certificate), with who, from where
    /// and why. Each agent keeps its own last 1000; ask each one.
    #[arg(long, conflicts_with = "agents")]
    pub denied: bool,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the cluster CA (ca.pem, ca-key.pem) and `ternctl`, the administrator's
    /// own user certificate (profile System Administrator).
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A name for the cluster, written into the CA's subject.
        #[arg(long, default_value = "tern")]
        cluster: String,
        /// Lifetime of the `ternctl` certificate, in days.
        #[arg(long, default_value_t = tern_tls::USER_DAYS_DEFAULT)]
        days: u32,
    },
    /// Issue a certificate NAME signed by the CA in DIR: a node's (for its ternd; the
    /// default), or with --user a person's, with the rights profiles they hold.
    Issue {
        name: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A user certificate (client only) instead of a node's.
        #[arg(long)]
        user: bool,
        /// A user's rights profile: "LDoms Review" (read), "LDoms Management" (change
        /// domains, migrate), "System Administrator" (everything); or their slugs
        /// ldoms-review, ldoms-management, system-administrator. Repeatable.
        #[arg(long = "profile", value_name = "PROFILE", requires = "user")]
        profiles: Vec<String>,
        /// A node's host names or IP addresses it is reached by. Repeatable.
        #[arg(long = "san", value_name = "NAME", conflicts_with = "user")]
        sans: Vec<String>,
        /// Also valid as localhost, 127.0.0.1 and ::1 (nodes of a local cluster only).
        #[arg(long, conflicts_with = "user")]
        loopback: bool,
        /// Lifetime in days (default: 3650 for a node, 30 for a user).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Revoke certificate NAME of DIR: its serial is appended to DIR/revoked.txt. Copy
    /// that file to where each agent's `[tls] revoked` points; agents re-read it.
    Revoke {
        name: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum LocalCommand {
    /// Start N agents on loopback, wait for a leader, print how to reach them.
    Up(local::UpArgs),
    /// Stop the agents started under DIR.
    Down {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

fn resize(
    agent: &client::AgentArgs,
    r: resize::Resource,
    v: resize::Verb,
    a: &ResizeArgs,
    json: bool,
) -> anyhow::Result<i32> {
    block_on(resize::run(agent, r, v, &a.amount, &a.domain, json))
}

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let json = cli.json;
    let agent = cli.agent;
    let result = match cli.command {
        Command::Check { layouts, source, domain, target } => {
            check::run(&layouts, source.as_deref(), &domain, &target, json)
        }
        Command::ListDevices { all, kinds, host, layouts } if layouts.is_offline() => {
            if host.is_some() {
                Err(anyhow::anyhow!("--host is for the cluster; with layouts, name the files instead"))
            } else {
                list::devices(&layouts, all, &kinds, json)
            }
        }
        Command::ListDevices { all, kinds, host, .. } => {
            block_on(cluster::list_devices(&agent, host.as_deref(), all, &kinds, json))
        }
        Command::ListDomain { host, output, domain } => {
            block_on(cluster::list_domain(&agent, host.as_deref(), domain.as_deref(), output.as_deref(), json))
        }
        Command::MigrateDomain { dry_run, password_file, domain, target } => {
            let args = migrate::MigrateArgs {
                domain: &domain,
                target: &target,
                dry_run,
                password_file: password_file.as_deref(),
            };
            block_on(migrate::migrate(&agent, &args, json))
        }
        Command::CancelOperation { operation, domain } => block_on(migrate::cancel(&agent, &operation, &domain)),
        Command::ListOperations => block_on(migrate::list_operations(&agent, json)),
        Command::Top(args) => block_on(top::run(&agent, &args, json)),
        Command::User(UserCommand::Add { name, profiles, password_file, replace }) => {
            block_on(migrate::user_add(&agent, &name, &profiles, password_file.as_deref(), replace))
        }
        Command::User(UserCommand::Remove { name }) => block_on(migrate::user_remove(&agent, &name)),
        Command::User(UserCommand::List) => block_on(migrate::user_list(&agent, json)),
        Command::Demo(args) => block_on(demo::run(&args)),
        Command::Host(HostCommand::Evacuate { host, password_file }) => {
            block_on(migrate::host_op(&agent, &host, false, password_file.as_deref(), json))
        }
        Command::Host(HostCommand::Restore { host, password_file }) => {
            block_on(migrate::host_op(&agent, &host, true, password_file.as_deref(), json))
        }
        Command::Host(HostCommand::Fence { confirm_off: _, host }) => block_on(ha::set_host(&agent, &host, "fenced")),
        Command::Host(HostCommand::Up { host }) => block_on(ha::set_host(&agent, &host, "up")),
        Command::Ha(HaCommand::Status) => block_on(ha::status(&agent, json)),
        Command::Ha(HaCommand::Check) => block_on(ha::check(&agent, json)),
        Command::AddCore(a) => resize(&agent, resize::Resource::Cores, resize::Verb::Add, &a, json),
        Command::SetCore(a) => resize(&agent, resize::Resource::Cores, resize::Verb::Set, &a, json),
        Command::RemoveCore(a) => resize(&agent, resize::Resource::Cores, resize::Verb::Remove, &a, json),
        Command::AddMemory(a) => resize(&agent, resize::Resource::Memory, resize::Verb::Add, &a, json),
        Command::SetMemory(a) => resize(&agent, resize::Resource::Memory, resize::Verb::Set, &a, json),
        Command::RemoveMemory(a) => resize(&agent, resize::Resource::Memory, resize::Verb::Remove, &a, json),
        Command::SetDomain { mut args } => {
            let domain = args.pop().unwrap_or_default();
            block_on(ha::set_domain(&agent, &args, &domain))
        }
        Command::Rebalance(RebalanceCommand::Plan { layouts, level, grow, sizes }) => {
            block_on(rebalance::plan(&agent, &layouts, level, grow.as_deref(), &sizes, json))
        }
        Command::Rebalance(RebalanceCommand::MakeRoom { layouts, domain, host }) => {
            block_on(rebalance::make_room(&agent, &layouts, &domain, &host, json))
        }
        Command::Rebalance(RebalanceCommand::Apply { id }) => block_on(rebalance::apply(&agent, id, json)),
        Command::Rebalance(RebalanceCommand::Cancel { id }) => block_on(rebalance::cancel(&agent, id, json)),
        Command::Rebalance(RebalanceCommand::Status { limit, plan }) => {
            block_on(rebalance::status(&agent, limit, plan, json))
        }
        Command::Rebalance(RebalanceCommand::Auto { on, level }) => block_on(rebalance::auto(&agent, &on, level, json)),
        Command::Rebalance(RebalanceCommand::Set { pairs }) => block_on(rebalance::set(&agent, &pairs, json)),
        Command::Rebalance(RebalanceCommand::Group { name, strength }) => {
            block_on(rebalance::group(&agent, &name, &strength, json))
        }
        Command::Sim(SimCommand::PowerOff { state }) => ha::sim_power_off(&state),
        Command::Sim(SimCommand::CrashControlDomain { state }) => ha::sim_crash_control_domain(&state),
        Command::ListServices { host } => block_on(cluster::list_services(&agent, host.as_deref(), json)),
        Command::ImportLdm(args) => import::run(&args, json),
        Command::Cluster(ClusterCommand::Status) => block_on(cluster::status(&agent, json)),
        Command::Cluster(ClusterCommand::RemoveMember { name }) => {
            block_on(cluster::remove_member(&agent, &name, json))
        }
        Command::Cluster(ClusterCommand::AddMember { name }) => block_on(cluster::add_member(&agent, &name, json)),
        Command::Cluster(ClusterCommand::Snapshot(SnapshotCommand::Save { file, force })) => {
            block_on(cluster::snapshot_save(&agent, &file, force, json))
        }
        Command::Audit(args) => block_on(cluster::audit(&agent, &args, json)),
        Command::Certs(CertsCommand::Init { dir, cluster, days }) => certs::init(&dir, &cluster, days),
        Command::Certs(CertsCommand::Revoke { name, dir }) => certs::revoke(&dir, &name),
        Command::Certs(CertsCommand::Issue { name, dir, user, profiles, sans, loopback, days }) => {
            certs::issue(&dir, &name, user, &profiles, sans, loopback, days)
        }
        Command::LocalCluster(LocalCommand::Up(args)) => block_on(local::up(&args)),
        Command::LocalCluster(LocalCommand::Down { dir }) => block_on(local::down(&dir)),
        Command::Version => dist::version(),
        Command::Completions { shell } => dist::completions(shell),
        Command::Man { dir } => dist::man(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ternctl: {e:#}");
            EXIT_USAGE
        }
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<i32>>>(f: F) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

impl LayoutArgs {
    /// Layout files were named: answer offline.
    pub fn is_offline(&self) -> bool {
        !self.files.is_empty() || !self.dirs.is_empty()
    }
}
