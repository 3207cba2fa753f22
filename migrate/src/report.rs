//! What every migration report says besides its numbers.

/// The clock and network notes every report carries (LM-14, LM-15).
pub fn standard_notes(downtime_ms: u64) -> Vec<String> {
    vec![
        "LM-14: the guest's clock may lag slightly after migration; keep NTP running in the guest".to_string(),
        format!(
            "LM-15: guest networking was suspended for about {downtime_ms} ms; TCP and NFS retries cover it, static routes are recommended"
        ),
    ]
}
