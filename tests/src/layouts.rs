//! Synthetic servers for benchmarks: layout files with many one-core guests.

/// A SPARC M10 layout with `cores` cores (2 threads each) and `memory_gib` GB whose
/// primary has cores 0-3 and 8 GB, with `guests` one-core, 1 GB guests named
/// `{prefix}{j}` on cores 4.. and shared storage (so they can move and restart).
pub fn synthetic(prefix: &str, guests: usize, cores: usize, memory_gib: u64) -> String {
    const G: u64 = 1 << 30;
    assert!(guests + 4 <= cores, "{guests} one-core guests and primary need more than {cores} cores");
    let used = 9 + guests as u64;
    assert!(used < memory_gib, "{guests} guests of 1 GB and primary need more than {memory_gib} GB");
    let mut memory = format!(
        "  {{ pa = 0x0, size = \"1G\", bound = \"_sys_\" }},\n  {{ pa = {:#x}, size = \"8G\", bound = \"primary\" }},\n",
        G
    );
    let mut domains = String::new();
    for j in 0..guests {
        memory += &format!("  {{ pa = {:#x}, size = \"1G\", bound = \"{prefix}{j}\" }},\n", (9 + j as u64) * G);
        domains += &format!(
            "\n[[domain]]\nname = \"{prefix}{j}\"\nkind = \"guest\"\ncores = \"{}\"\nos = \"Solaris 11.1.17.5.0\"\n\
vdisks = [{{ name = \"vdisk0\", volume = \"vol0@primary-vds0\" }}]\nvnets = [{{ name = \"vnet0\", service = \"primary-vsw0\" }}]\n\
console = {{ service = \"primary-vcc0\", port = {} }}\nworkload = {{ cpu_pct = 10, dirty_mib_per_s = 5 }}\n",
            4 + j,
            5000 + j
        );
    }
    memory += &format!("  {{ pa = {:#x}, size = \"{}G\" }},\n", used * G, memory_gib - used);
    format!(
        "[server]\nmodel = \"SPARC M10-1\"\ncpu = \"SPARC64 X+\"\nfrequency_mhz = 3200\nfirmware = \"XCP2210\"\n\
os = \"Solaris 11.1.17.5.0\"\nthreads_per_core = 2\n\n[cpu]\ncids = \"0-{last}\"\n\n[memory]\nblocks = [\n{memory}]\n\n\
[[vds]]\nname = \"primary-vds0\"\nvolumes = [{{ name = \"vol0\", device = \"/dev/dsk/c0t600000E00D28000000280CC600020000d0s2\", shared = true }}]\n\n\
[[vsw]]\nname = \"primary-vsw0\"\nnic = \"net1\"\n\n[[vcc]]\nname = \"primary-vcc0\"\nports = \"5000-6000\"\n\n\
[[domain]]\nname = \"primary\"\nkind = \"control\"\ncores = \"0-3\"\nos = \"Solaris 11.1.17.5.0\"\n{domains}",
        last = cores - 1
    )
}
