use custos_proto::v1::{event::Body, FileAccess, FileOpen, Identity, ProcessExec};

use super::*;
use crate::sinks::encode::tests::process;

fn event(body: Body) -> Event {
    Event {
        seq: 9,
        run_id: "run".into(),
        host: "web-1".into(),
        time: Some(pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 250_000_000,
        }),
        identity: Some(Box::new(Identity {
            uid: 1000,
            user: "alice".into(),
            euid: 0,
            euser: "root".into(),
            login_uid: Some(1000),
            login_user: "alice".into(),
            session_id: Some(4),
            ..Identity::default()
        })),
        process: Some(Box::new(process(77, "/usr/bin/vim.basic"))),
        body: Some(body),
        ..Event::default()
    }
}

#[test]
fn an_exec_is_a_process_launch_with_its_parent_as_actor() {
    let parent = process(70, "/usr/bin/bash");
    let object = to_ocsf(&event(Body::Exec(ProcessExec {
        parent: Some(Box::new(parent)),
    })))
    .unwrap();
    assert_eq!(object["class_uid"], 1007);
    assert_eq!(object["type_uid"], 100701);
    assert_eq!(object["time"], 1_700_000_000_250_i64);
    assert_eq!(object["metadata"]["version"], OCSF_VERSION);
    assert_eq!(object["metadata"]["uid"], "run:9");
    assert_eq!(object["process"]["file"]["path"], "/usr/bin/vim.basic");
    assert_eq!(object["process"]["user"]["name"], "root");
    assert_eq!(object["process"]["auid"], 1000);
    assert_eq!(object["actor"]["process"]["file"]["name"], "bash");
    assert_eq!(object["actor"]["user"]["name"], "alice");
    assert_eq!(object["actor"]["session"]["uid"], "4");
    assert_eq!(object["unmapped"]["identity"]["loginUser"], "alice");
    assert!(object["unmapped"]["exec"].is_object(), "{object}");
}

#[test]
fn a_created_file_is_a_file_create_and_a_denied_read_a_failure() {
    let created = FileOpen {
        path: "/etc/cron.d/job".into(),
        access: Some(FileAccess {
            write: true,
            create: true,
            ..FileAccess::default()
        }),
        ..FileOpen::default()
    };
    let object = to_ocsf(&event(Body::FileOpen(created))).unwrap();
    assert_eq!(object["class_uid"], 1001);
    assert_eq!(object["activity_id"], 1);
    assert_eq!(object["file"]["name"], "job");
    assert_eq!(object["file"]["parent_folder"], "/etc/cron.d");
    assert_eq!(object["status_id"], 1);

    let denied = FileOpen {
        path: "/etc/shadow".into(),
        access: Some(FileAccess {
            read: true,
            ..FileAccess::default()
        }),
        errno: Some(13),
        error: "EACCES".into(),
        denied: true,
        ..FileOpen::default()
    };
    let object = to_ocsf(&event(Body::FileOpen(denied))).unwrap();
    assert_eq!(object["activity_id"], 2);
    assert_eq!(object["status_id"], 2);
    assert_eq!(object["status_code"], "EACCES");
    assert_eq!(object["action"], "Denied");
}
