//! The event kinds, declared once. Each has the number of `custos.v1.EventKind` (the public
//! schema; a test in `custos-proto` checks that the two agree), the short name used in metrics
//! labels, syslog MSGIDs and NATS subjects, and, for the kinds the kernel programs send, the
//! record kind of the ring buffer (the same number, in [`kind`](crate::kind)). Numbers are never
//! reused: a retired kind keeps its number unused.

/// One event kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventKindInfo {
    /// Its number in `custos.v1.EventKind`.
    pub number: u32,
    /// `EVENT_KIND_<NAME>` in the schema.
    pub schema_name: &'static str,
    /// Lower-case short name (`file_open`).
    pub short_name: &'static str,
    /// Whether an event body of this kind exists (forks are tracked, not reported).
    pub reported: bool,
}

macro_rules! event_kinds {
    ($($const:ident = $number:literal, $short:literal, $reported:ident
        $(, record $record:ident)?;)*) => {
        /// Every event kind, in number order.
        pub const EVENT_KINDS: &[EventKindInfo] = &[$(EventKindInfo {
            number: $number,
            schema_name: stringify!($const),
            short_name: $short,
            reported: event_kinds!(@reported $reported),
        },)*];

        /// Kinds of the records the kernel programs send: the numbers of their event kinds.
        /// Also the index into the per-kind drop counters.
        pub mod kind {
            $($(
                #[doc = concat!("Records of `EVENT_KIND_", stringify!($const), "`.")]
                pub const $record: u32 = $number;
            )?)*
            /// Slots in the drop-counter array (above the highest record kind, with room to
            /// grow).
            pub const COUNT: u32 = 16;
        }
    };
    (@reported reported) => { true };
    (@reported tracked) => { false };
}

event_kinds! {
    PROCESS_EXEC = 1, "exec", reported, record EXEC;
    PROCESS_EXIT = 2, "exit", reported, record EXIT;
    PROCESS_FORK = 3, "fork", tracked, record FORK;
    FILE_OPEN = 4, "file_open", reported, record FILE_OPEN;
    LOSS = 5, "loss", reported;
    PRIVILEGE_CHANGE = 6, "privilege_change", reported, record PRIVILEGE_CHANGE;
    SESSION_START = 7, "session_start", reported;
    SESSION_END = 8, "session_end", reported;
    BLOCK_DEVICE = 9, "block_device", reported, record BLOCK_DEVICE;
    MOUNT = 10, "mount", reported, record MOUNT;
    DEVICE_CONTROL = 11, "device_control", reported;
    DEVICE_WRITE_SUMMARY = 12, "device_write_summary", reported;
    ALERT = 13, "alert", reported;
}

/// The kind numbered `number`.
pub fn event_kind(number: u32) -> Option<&'static EventKindInfo> {
    EVENT_KINDS.iter().find(|k| k.number == number)
}

const _: () = {
    let mut i = 0;
    while i < EVENT_KINDS.len() {
        assert!(
            EVENT_KINDS[i].number < kind::COUNT,
            "a kind past the drop counters"
        );
        i += 1;
    }
};
