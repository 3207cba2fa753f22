//! Every bound the replicated state enforces, in one place.
//!
//! Apply rejects a command that exceeds one of these (deterministically, so every
//! member rejects it alike); [`crate::Request::validate`] lets a proposer refuse it
//! before it ever reaches the log. Units are last in the names.

/// Longest host, domain, user or group name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Longest free text field (address, actor, reason, one note), in bytes.
pub const TEXT_BYTES_MAX: usize = 256;
/// Most notes attached to one operation result.
pub const NOTES_MAX: usize = 16;
/// Most profiles one user holds.
pub const PROFILES_MAX: usize = 16;
/// Longest PHC password hash string, in bytes.
pub const PASSWORD_HASH_BYTES_MAX: usize = 512;

/// Largest encoded request a proposer may submit (a large server's inventory is
/// well under 1 MiB of JSON).
pub const REQUEST_BYTES_MAX: usize = 4 << 20;
/// Largest encoded log entry the decoder accepts: a request plus its envelope, with
/// room to spare so that an entry already in a log is never unreadable.
pub const ENTRY_BYTES_MAX: usize = 4 * REQUEST_BYTES_MAX;
/// Largest snapshot the decoder accepts.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;

/// Most cores, strands, memory blocks and domains one inventory report may list.
pub const INVENTORY_CORES_MAX: usize = 4096;
pub const INVENTORY_STRANDS_MAX: usize = 32_768;
pub const INVENTORY_MEMORY_BLOCKS_MAX: usize = 65_536;
pub const INVENTORY_DOMAINS_MAX: usize = 4096;
/// Most services (VDS + VSW + VCC) and volumes per VDS in one report.
pub const INVENTORY_SERVICES_MAX: usize = 1024;
pub const INVENTORY_VOLUMES_MAX: usize = 4096;

/// Most hosts the cluster tracks.
pub const HOSTS_MAX: usize = 4096;
/// Most users.
pub const USERS_MAX: usize = 1024;
/// Most reservations held at once (active or not yet expired by an `Expire`).
pub const RESERVATIONS_MAX: usize = 16_384;
/// Most strands and memory ranges one reservation may hold.
pub const BINDING_STRANDS_MAX: usize = 4096;
pub const BINDING_RANGES_MAX: usize = 1024;
/// Most operations not yet finished.
pub const RUNNING_OPERATIONS_MAX: usize = 4096;
/// Finished operations kept for `list` and reports; the oldest are dropped first.
pub const FINISHED_OPERATIONS_KEPT_MAX: usize = 1024;
/// Most requests one log entry carries ([`crate::Command::Batch`]), and the most bytes
/// they may encode to together: a request larger than that is written alone.
pub const BATCH_REQUESTS_MAX: usize = 256;
pub const BATCH_BYTES_MAX: usize = 256 << 10;
/// Audit records kept; the oldest are dropped first.
pub const AUDIT_RECORDS_MAX: usize = 10_000;
/// Longest one-line audit summary, in bytes.
pub const AUDIT_SUMMARY_BYTES_MAX: usize = 256;

/// Longest lease a reservation may be given or renewed for (10 minutes): a
/// coordinator that dies holds resources at most this long (ARCHITECTURE step 5).
pub const LEASE_MS_MAX: u64 = 10 * 60 * 1000;

/// Longest isolation timeout, watchdog timeout or margin a host may declare (HA-08):
/// one hour, so that sums of them cannot overflow and a typo cannot park guests for days.
pub const SELF_STOP_MS_MAX: u64 = 60 * 60 * 1000;

// Relations between the limits, checked at compile time.
const _: () = assert!(ENTRY_BYTES_MAX > REQUEST_BYTES_MAX);
const _: () = assert!(SNAPSHOT_BYTES_MAX > ENTRY_BYTES_MAX);
const _: () = assert!(NAME_BYTES_MAX <= TEXT_BYTES_MAX);
const _: () = assert!(AUDIT_SUMMARY_BYTES_MAX >= NAME_BYTES_MAX * 2);
const _: () = assert!(BINDING_STRANDS_MAX <= INVENTORY_STRANDS_MAX);
const _: () = assert!(BATCH_BYTES_MAX < REQUEST_BYTES_MAX);

/// Most moves one rebalance plan holds, and notes it carries (RB-04).
pub const PLAN_MOVES_MAX: usize = 64;
pub const PLAN_NOTES_MAX: usize = 64;
/// Rebalance plans kept; the oldest that is not applying is dropped first.
pub const PLANS_KEPT_MAX: usize = 32;
/// Most (anti-)affinity groups given a strength.
pub const GROUPS_MAX: usize = 1024;
/// Longest rebalance cooldown or downtime bound: one day.
pub const REBALANCE_MS_MAX: u64 = 24 * 60 * 60 * 1000;
