//! A real full disk: the test makes a 48 MiB ext4 image, loop-mounts it, runs the real server on
//! it and writes until the file system is full. Writes must then answer 507 (never hang, never
//! 5xx of another kind), reads keep working, and once space is freed writes work again; after a
//! SIGKILL and a restart every acknowledged write is there.
//!
//! Loop mounts need root and a loop device. Where they are not available the test says so and
//! stops (under `CI=true` it fails instead: CI runs as root and must run it);
//! `tests/faults.rs` covers the same rules on the fault-injecting file system.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// A loop-mounted ext4 image, unmounted on drop.
struct LoopMount {
    mount_point: PathBuf,
}

impl LoopMount {
    fn create(dir: &Path, megabytes: u64) -> Result<LoopMount, String> {
        let image = dir.join("disk.img");
        let mount_point = dir.join("mnt");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(megabytes << 20))
            .map_err(|e| e.to_string())?;
        run("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()])?;
        run(
            "mount",
            &[
                "-o",
                "loop",
                &image.to_string_lossy(),
                &mount_point.to_string_lossy(),
            ],
        )?;
        Ok(LoopMount { mount_point })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.mount_point.to_string_lossy()]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

const SERVER_ARGS: &[&str] = &[
    "--wal-segment-bytes",
    "2097152",
    "--memtable-bytes",
    "2097152",
    "--max-value-bytes",
    "65536",
];

#[test]
fn a_full_disk_answers_507_loses_nothing_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mount = match LoopMount::create(dir.path(), 48) {
        Ok(mount) => mount,
        // CI runs as root on a machine with loop devices: a skip there would hide a lost test,
        // so it fails. Elsewhere (a developer without root) it is said loudly and skipped.
        Err(why) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but no loop-mounted file system could be made ({why}): the real full-disk test did not run");
        }
        Err(why) => {
            eprintln!("SKIPPED: no loop-mounted file system here ({why}); tests/faults.rs covers ENOSPC on the fault layer");
            return;
        }
    };
    let data = mount.mount_point.join("data");
    // Space that can be given back later.
    let ballast = mount.mount_point.join("ballast");
    std::fs::write(&ballast, vec![1u8; 8 << 20]).unwrap();

    let server = TestServer::start(&data, SERVER_ARGS);
    let mut client = server.connect();
    // Incompressible: LZ4 would shrink a repeated letter to nothing, and the disk never fill.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut value = || {
        let text: String = (0..16 << 10)
            .map(|_| {
                char::from(
                    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"[rng.gen_range(0..64)],
                )
            })
            .collect();
        json!(text)
    };
    let mut acknowledged = Vec::new();
    let mut full = 0;
    let mut other_failures = Vec::new();
    let begun = Instant::now();
    for i in 0..20_000 {
        let key = format!("k{i:05}");
        let response = client.set(&key, &value());
        match response.status {
            200 => acknowledged.push(key),
            507 => {
                full += 1;
                if full >= 20 {
                    break;
                }
            }
            status => other_failures.push((status, String::from_utf8_lossy(&response.body).to_string())),
        }
    }
    eprintln!(
        "{} writes acknowledged, then {full} answered 507, in {:?}",
        acknowledged.len(),
        begun.elapsed()
    );
    assert!(other_failures.is_empty(), "{other_failures:?}");
    assert!(full >= 20, "the disk never filled");
    assert!(
        acknowledged.len() > 500,
        "only {} writes before the disk was full",
        acknowledged.len()
    );
    // Reads go on while the disk is full.
    for key in acknowledged.iter().step_by(97) {
        assert_eq!(client.get(key).status, 200, "{key}");
    }

    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resumed = None;
    let mut n = 0;
    while Instant::now() < deadline {
        let key = format!("after{n}");
        n += 1;
        let response = client.set(&key, &json!("after"));
        if response.status == 200 {
            resumed = Some(key);
            break;
        }
        assert_eq!(
            response.status,
            507,
            "{:?}",
            String::from_utf8_lossy(&response.body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resumed = resumed.expect("writes never worked again after space was freed");
    eprintln!("writes resumed after {n} tries once space was freed");
    acknowledged.push(resumed);

    // Nothing leaked: once the background work settles, no temporary file is left, and a
    // restart (which deletes every table the manifest does not name) finds no orphan table.
    let settled = settled_listing(&data);
    let leftovers: Vec<_> = settled
        .iter()
        .filter(|(name, _)| name.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left after the storm: {leftovers:?}"
    );
    let tables = |listing: &[(String, u64)]| -> Vec<(String, u64)> {
        listing
            .iter()
            .filter(|(name, _)| name.ends_with(".sst"))
            .cloned()
            .collect()
    };
    let total: u64 = settled.iter().map(|(_, bytes)| bytes).sum();
    eprintln!(
        "after the storm: {} files, {total} bytes, {} tables",
        settled.len(),
        tables(&settled).len()
    );

    server.kill();
    let server = TestServer::start(&data, SERVER_ARGS);
    let restarted = listing(&data);
    assert_eq!(
        tables(&restarted),
        tables(&settled),
        "the restart deleted tables nothing named: the storm left orphans"
    );
    let mut client = server.connect();
    for key in &acknowledged {
        let response = client.get(key);
        assert_eq!(response.status, 200, "acknowledged {key} lost after the restart");
    }
}

/// The files of `dir` with their sizes, by name.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let bytes = entry.metadata().ok()?.len();
            Some((entry.file_name().to_string_lossy().into_owned(), bytes))
        })
        .collect();
    files.sort();
    files
}

/// The listing once it has not changed for a second (the background has retried and settled).
fn settled_listing(dir: &Path) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = listing(dir);
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = listing(dir);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}
