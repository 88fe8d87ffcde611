//! Block devices with real loop devices: a new device and its media, mounts (also through the
//! new mount API), writes carrying the device, the per-identity summary, and read-only and deny
//! rules enforced right after attach.
use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    loop_device::LoopDevice, of_kind, require_root, run, seq, uint64, Entry, Sensor, TestConfig,
};
use serde_json::Value;

/// A sensor with one device rule for loop devices, a new loop device with its media attached,
/// and the rule's decision about it.
fn attach_under_rule(rule: &str, action: &str) -> Result<(Sensor, LoopDevice, Value)> {
    let sensor = Sensor::start(
        &TestConfig::new().device_rule(
            Entry::new()
                .set("name", rule)
                .set("action", action)
                .set("bus", "loop"),
        ),
    )?;
    let device = LoopDevice::create()?;
    device.attach()?;
    let name = device.name();
    let control = sensor.wait_for("the device-control decision", |events| {
        of_kind(events, "deviceControl")
            .find(|e| e["deviceControl"]["device"]["name"] == name.as_str())
            .cloned()
    })?;
    Ok((sensor, device, control))
}

fn block_event<'a>(events: &'a [Value], action: &str, name: &str) -> Option<&'a Value> {
    of_kind(events, "blockDevice").find(|e| {
        e["blockDevice"]["action"] == action && e["blockDevice"]["device"]["name"] == name
    })
}

/// The scenario on a real loop device: created, attached, mounted, written to,
/// unmounted, detached, removed; each step is an event, and the writes carry the device even
/// though the mount point is excluded from file events.
#[test]
fn a_new_loop_device_its_media_mount_and_writes_are_reported() -> Result<()> {
    require_root();
    let tmp = std::env::temp_dir();
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .exclude_paths(&[&tmp])
            .device_summary_seconds(1),
    )?;
    let device = LoopDevice::create()?;
    let name = device.name();
    device.attach()?;
    device.mount()?;
    let written = device.mount_point.join("copied.txt");
    std::fs::write(&written, b"data leaving the building")?;
    run("umount", &[device.mount_point.to_str().unwrap()])?;
    run("losetup", &["-d", &device.node()])?;
    let index = device.index;
    drop(device);

    let events = sensor.wait_for("the loop device's removal", |events| {
        block_event(events, "DEVICE_ACTION_REMOVED", &name).map(|_| events.to_vec())
    })?;
    let added = block_event(&events, "DEVICE_ACTION_ADDED", &name).context("no added event")?;
    let device = &added["blockDevice"]["device"];
    assert_eq!(
        (device["major"].as_u64(), device["minor"].as_u64()),
        (Some(7), Some(u64::from(index)))
    );
    assert_eq!(device["bus"], "loop");
    assert_eq!(device["watched"], true);
    assert_eq!(added["identity"]["user"], "root");
    assert_eq!(
        added["process"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );

    let backing = check_media_inserted(&events, &name, &tmp)?;
    check_mount_and_unmount(&events, &name)?;

    let write = of_kind(&events, "fileOpen")
        .find(|e| {
            e["fileOpen"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/copied.txt"))
        })
        .context("the write on the mount was not reported (excluded path, watched device)")?;
    assert_eq!(write["fileOpen"]["access"]["write"], true);
    assert_eq!(write["fileOpen"]["device"]["name"], name.as_str());
    assert_eq!(write["fileOpen"]["device"]["backingFile"], backing);

    assert!(block_event(&events, "DEVICE_ACTION_MEDIA_REMOVED", &name).is_some());
    let summary = sensor.wait_for("a write summary for the device", |events| {
        of_kind(events, "deviceWriteSummary")
            .find(|e| e["deviceWriteSummary"]["device"]["name"] == name.as_str())
            .cloned()
    })?;
    assert_eq!(summary["identity"]["uid"].as_u64(), Some(0));
    assert!(
        uint64(&summary["deviceWriteSummary"]["writeOpens"]) >= 1,
        "{summary}"
    );
    assert!(
        uint64(&summary["deviceWriteSummary"]["createOpens"]) >= 1,
        "{summary}"
    );
    sensor.stop()?;
    Ok(())
}

/// A sensor where file events under the temporary directory (the tests' mount points) are
/// excluded: only a watched device's writes there are reported.
fn sensor_excluding_tmp() -> Result<Sensor> {
    require_root();
    Sensor::start(&TestConfig::new().exclude_paths(&[std::env::temp_dir()]))
}

/// A new loop device with an image of one partition, the partition made (as by partx).
fn partitioned_loop_device() -> Result<LoopDevice> {
    let device = LoopDevice::create()?;
    device.partition_image()?;
    device.attach()?;
    device.add_partitions()?;
    Ok(device)
}

/// Mounts the device's first partition, writes `file` there and unmounts it.
fn write_on_partition(device: &LoopDevice, file: &str) -> Result<()> {
    let mount_point = device.mount_point.to_str().unwrap();
    run(
        "mount",
        &[&format!("/dev/{}", device.partition_name()), mount_point],
    )?;
    std::fs::write(device.mount_point.join(file), b"data leaving early")?;
    run("umount", &[mount_point])
}

/// The report of the write of `file`.
fn write_of<'a>(events: &'a [Value], file: &str) -> Option<&'a Value> {
    of_kind(events, "fileOpen").find(|e| {
        e["fileOpen"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("/{file}")))
    })
}

/// A partition the kernel makes on a new loop device (told of it as by partx) is a device of
/// its own, not the loop device: a file written on it at once, where file events are excluded,
/// is reported with the partition, watched.
#[test]
fn writes_on_a_new_partition_are_reported_with_it() -> Result<()> {
    let mut sensor = sensor_excluding_tmp()?;
    let device = partitioned_loop_device()?;
    write_on_partition(&device, "copied.txt")?;
    let write = sensor.wait_for("the write on the partition", |events| {
        write_of(events, "copied.txt").cloned()
    })?;
    assert_eq!(write["fileOpen"]["access"]["write"], true);
    let written_on = &write["fileOpen"]["device"];
    assert_eq!(
        written_on["name"],
        device.partition_name().as_str(),
        "{write}"
    );
    assert_eq!(written_on["watched"], true, "{write}");
    drop(device);
    sensor.stop()?;
    Ok(())
}

/// A partition's number goes to the next partition made once it is gone (as a second USB
/// stick's `sdb1` gets the first one's): writes on the new one carry the new one, not the
/// description of the partition that had the number before.
#[test]
fn a_partition_number_given_again_describes_the_new_partition() -> Result<()> {
    let mut sensor = sensor_excluding_tmp()?;
    let first = partitioned_loop_device()?;
    write_on_partition(&first, "first.txt")?;
    first.remove_partitions()?;
    let second = partitioned_loop_device()?;
    write_on_partition(&second, "second.txt")?;
    let (before, after) = sensor.wait_for("the writes on both partitions", |events| {
        Some((
            write_of(events, "first.txt")?.clone(),
            write_of(events, "second.txt")?.clone(),
        ))
    })?;
    let number = |write: &Value| {
        let device = &write["fileOpen"]["device"];
        (device["major"].clone(), device["minor"].clone())
    };
    eprintln!(
        "partition numbers {:?} then {:?}",
        number(&before),
        number(&after)
    );
    assert_eq!(
        before["fileOpen"]["device"]["name"],
        first.partition_name().as_str()
    );
    let device = &after["fileOpen"]["device"];
    assert_eq!(device["name"], second.partition_name().as_str(), "{after}");
    assert_eq!(
        device["backingFile"],
        second.image.to_str().unwrap(),
        "{after}"
    );
    drop((first, second));
    sensor.stop()?;
    Ok(())
}

/// The image attached as the loop device's media, by losetup as root; the backing file.
fn check_media_inserted(events: &[Value], name: &str, tmp: &std::path::Path) -> Result<String> {
    let inserted =
        block_event(events, "DEVICE_ACTION_MEDIA_INSERTED", name).context("no media event")?;
    let image = std::fs::canonicalize(tmp)?; // the image lives under the temp dir
    let backing = inserted["blockDevice"]["device"]["backingFile"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        backing.starts_with(image.to_str().unwrap()) && backing.ends_with("/disk.img"),
        "{backing}"
    );
    assert!(inserted["process"]["binary"]
        .as_str()
        .unwrap()
        .ends_with("/losetup"));
    assert_eq!(inserted["identity"]["uid"].as_u64(), Some(0));
    Ok(backing)
}

/// The loop device's mount (ext4 on the test's mount point) and its unmount after it.
fn check_mount_and_unmount(events: &[Value], name: &str) -> Result<()> {
    let mount = of_kind(events, "mount")
        .find(|e| e["mount"]["source"] == format!("/dev/{name}").as_str())
        .context("no mount event")?;
    assert_eq!(mount["mount"]["operation"], "MOUNT_OPERATION_MOUNT");
    assert_eq!(mount["mount"]["fstype"], "ext4");
    assert_eq!(mount["mount"]["device"]["name"], name);
    assert!(mount["mount"]["target"].as_str().unwrap().ends_with("/mnt"));
    let target = mount["mount"]["target"].clone();
    let unmount = of_kind(events, "mount")
        .find(|e| {
            e["mount"]["operation"] == "MOUNT_OPERATION_UNMOUNT" && e["mount"]["target"] == target
        })
        .context("no unmount event")?;
    assert!(seq(unmount) > seq(mount));
    Ok(())
}

/// The decision of a device-control event: `action` by the first rule, named `rule`, enforced
/// by `method`.
fn enforced<'a>(control: &'a Value, action: &str, rule: &str, method: &str) -> &'a Value {
    let decision = &control["deviceControl"];
    let action = format!("DEVICE_CONTROL_ACTION_{action}");
    assert_eq!(decision["action"], action.as_str());
    assert_eq!(
        decision["rule"],
        format!("devices.rules[0] ({rule})").as_str()
    );
    assert_eq!(decision["method"], method);
    assert_eq!(decision["enforced"], true, "{decision}");
    decision
}

/// A read-only rule for loop devices: right after the media arrives the sensor sets the device
/// read-only and says so; the filesystem then mounts read-only and a write fails with EROFS.
#[test]
fn a_read_only_rule_makes_writes_on_a_new_device_fail_with_erofs() -> Result<()> {
    require_root();
    let (mut sensor, device, control) = attach_under_rule("loop-read-only", "read_only")?;
    let name = device.name();
    let decision = enforced(&control, "READ_ONLY", "loop-read-only", "BLKROSET");
    assert_eq!(decision["device"]["readOnly"], true);
    assert_eq!(
        std::fs::read_to_string(format!("/sys/block/{name}/ro"))?.trim(),
        "1",
        "the kernel has the device read-only"
    );

    // mount(8) falls back to a read-only mount on a write-protected device.
    device.mount()?;
    let err = std::fs::write(device.mount_point.join("exfil.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    drop(device);
    sensor.stop()?;
    Ok(())
}

/// A deny rule for loop devices: the media is detached again right after it arrives, and the
/// decision says so.
#[test]
fn a_deny_rule_detaches_a_loop_devices_media() -> Result<()> {
    require_root();
    let (mut sensor, device, control) = attach_under_rule("no-images", "deny")?;
    let name = device.name();
    enforced(&control, "DENY", "no-images", "loop-detach");
    let backing = format!("/sys/block/{name}/loop/backing_file");
    assert!(
        !std::path::Path::new(&backing).exists(),
        "the media is gone: {backing}"
    );
    drop(device);
    sensor.stop()?;
    Ok(())
}

/// The new mount API (fsopen, fsconfig, fsmount, move_mount) is reported as one mount, with the
/// filesystem type and source of the earlier steps; the unmount follows.
#[test]
fn the_new_mount_api_is_one_mount_event() -> Result<()> {
    require_root();
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target)?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (fstype, key, source, empty) = (c("tmpfs"), c("source"), c("custos-new-api"), c(""));
    let target_c = c(target.to_str().unwrap());
    const FSCONFIG_SET_STRING: libc::c_long = 1;
    const FSCONFIG_CMD_CREATE: libc::c_long = 6;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_long = 4;
    // SAFETY: the raw syscalls get valid NUL-terminated strings and fds they returned.
    unsafe {
        let context = libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), 1);
        ensure!(context >= 0, "fsopen: {}", std::io::Error::last_os_error());
        let set = libc::syscall(
            libc::SYS_fsconfig,
            context,
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            source.as_ptr(),
            0,
        );
        ensure!(set == 0, "fsconfig: {}", std::io::Error::last_os_error());
        let created = libc::syscall(libc::SYS_fsconfig, context, FSCONFIG_CMD_CREATE, 0, 0, 0);
        ensure!(
            created == 0,
            "fsconfig create: {}",
            std::io::Error::last_os_error()
        );
        let mount = libc::syscall(libc::SYS_fsmount, context, 1, 0);
        ensure!(mount >= 0, "fsmount: {}", std::io::Error::last_os_error());
        let moved = libc::syscall(
            libc::SYS_move_mount,
            mount,
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        );
        ensure!(
            moved == 0,
            "move_mount: {}",
            std::io::Error::last_os_error()
        );
        libc::close(mount as i32);
        libc::close(context as i32);
        ensure!(libc::umount2(target_c.as_ptr(), 0) == 0, "umount2");
    }
    let target = target.to_str().unwrap().to_owned();
    let (mount, unmount) = sensor.wait_for("the mount and unmount", |events| {
        let of = |operation: &str| {
            of_kind(events, "mount")
                .find(|e| {
                    e["mount"]["operation"] == operation && e["mount"]["target"] == target.as_str()
                })
                .cloned()
        };
        Some((of("MOUNT_OPERATION_MOUNT")?, of("MOUNT_OPERATION_UNMOUNT")?))
    })?;
    assert_eq!(mount["mount"]["syscall"], "move_mount");
    assert_eq!(mount["mount"]["fstype"], "tmpfs");
    assert_eq!(mount["mount"]["source"], "custos-new-api");
    assert_eq!(
        mount["process"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert!(seq(&unmount) > seq(&mount));
    sensor.stop()?;
    Ok(())
}
