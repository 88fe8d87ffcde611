//! The event kinds, declared once. Each has the number of `custos.v1.EventKind` (the public
//! schema; a test in `custos-proto` checks that the two agree), the short name used in metrics
//! labels, syslog MSGIDs and NATS subjects, the member of `Event`'s `body` oneof that carries it
//! (from which `custos-proto` generates `Event::kind`), and, for the kinds the kernel programs
//! send, the record kind of the ring buffer (the same number, in [`kind`](crate::kind)). Numbers
//! are never reused: a retired kind keeps its number unused.

/// One event kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventKindInfo {
    /// Its number in `custos.v1.EventKind`.
    pub number: u32,
    /// `EVENT_KIND_<NAME>` in the schema.
    pub schema_name: &'static str,
    /// Lower-case short name (`file_open`).
    pub short_name: &'static str,
    /// The `Event.body` oneof member of this kind; `None` for kinds that are tracked, not
    /// reported (forks).
    pub body: Option<&'static str>,
}

impl EventKindInfo {
    /// Whether events of this kind are reported (have a body).
    pub const fn reported(&self) -> bool {
        self.body.is_some()
    }
}

/// Declares the kinds: see the table in the crate root.
#[macro_export]
macro_rules! event_kinds {
    ($($const:ident = $number:literal, $short:literal, $body:tt
        $(, record $record:ident)?;)*) => {
        /// Every event kind, in number order.
        pub const EVENT_KINDS: &[$crate::kinds::EventKindInfo] = &[$($crate::kinds::EventKindInfo {
            number: $number,
            schema_name: stringify!($const),
            short_name: $short,
            body: $crate::event_kinds!(@body $body),
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
    (@body tracked) => { None };
    (@body $field:literal) => { Some($field) };
}

pub use crate::{kind, EVENT_KINDS};

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
