//! Looks up what the host grants, off the event path: NSS and `sudo -l` may take a while (a
//! directory server, a subprocess), so a thread of its own answers these questions.
use std::{
    path::PathBuf,
    sync::mpsc::{channel, Receiver, Sender},
    thread,
};

use anyhow::{Context as _, Result};

use crate::access::grants::{grants_of, privileged_programs, HostGrants, PrivilegedProgram};

pub enum Request {
    /// Scan the program directories again.
    Programs,
    Person(String),
}

pub enum Answer {
    Programs(Vec<PrivilegedProgram>),
    Person(String, HostGrants),
}

pub struct GrantsWorker {
    requests: Sender<Request>,
    answers: Receiver<Answer>,
}

impl GrantsWorker {
    /// Starts the thread; `programs` is the scan done so far.
    pub fn spawn(program_dirs: Vec<PathBuf>, programs: Vec<PrivilegedProgram>) -> Result<Self> {
        let (requests, incoming) = channel::<Request>();
        let (outgoing, answers) = channel::<Answer>();
        thread::Builder::new()
            .name("custos-grants".into())
            .spawn(move || serve(&program_dirs, programs, &incoming, &outgoing))
            .context("starting the grants thread")?;
        Ok(Self { requests, answers })
    }

    pub fn ask(&self, request: Request) {
        // The thread ends only with the worker.
        let _ = self.requests.send(request);
    }

    /// Answers ready so far.
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}

fn serve(
    dirs: &[PathBuf],
    mut programs: Vec<PrivilegedProgram>,
    incoming: &Receiver<Request>,
    outgoing: &Sender<Answer>,
) {
    for request in incoming {
        let answer = match request {
            Request::Programs => {
                programs = privileged_programs(dirs);
                Answer::Programs(programs.clone())
            }
            Request::Person(person) => {
                let grants = grants_of(&person, &programs);
                Answer::Person(person, grants)
            }
        };
        if outgoing.send(answer).is_err() {
            return;
        }
    }
}
