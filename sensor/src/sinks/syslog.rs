//! RFC 5424 syslog messages carrying one event each as JSON, for rsyslog, syslog-ng and the SIEMs
//! that only take syslog. Over TCP or TLS, messages are framed by octet counting (RFC 6587:
//! the message length in ASCII, a space, the message), which both daemons read by default.
use std::io::Write as _;

use anyhow::Result;
use custos_proto::v1::{event::Body, Event};
use prost::Message as _;

use super::{
    json::JsonEncoder,
    ocsf,
    parts::{PartIds, SharedParts},
    rfc3339,
};
use crate::config::Format;

/// Fixed parts of every message, and the encoder of their bodies.
pub struct SyslogFormat {
    facility: u8,
    /// HOSTNAME, APP-NAME and PROCID, ready to write.
    header: String,
    json: JsonEncoder,
    /// Set when the bodies are OCSF rather than canonical JSON.
    ocsf: bool,
}

const SEVERITY_WARNING: u8 = 4;
const SEVERITY_INFO: u8 = 6;

impl SyslogFormat {
    /// Frames with bodies in `format` (JSON or OCSF).
    pub fn new(facility: u8, hostname: &str, app_name: &str, proc_id: u32, format: Format) -> Self {
        Self {
            facility,
            header: format!(
                "{} {} {proc_id}",
                header_field(hostname),
                header_field(app_name)
            ),
            json: JsonEncoder::default(),
            ocsf: format == Format::Ocsf,
        }
    }

    /// One spooled record (a delimited `custos.v1.Event`) as an octet-counted syslog frame.
    pub fn frame(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut event = Event::decode_length_delimited(record)?;
        let severity = match event.body {
            Some(Body::Loss(_)) => SEVERITY_WARNING,
            _ => SEVERITY_INFO,
        };
        let mut message = Vec::with_capacity(1024);
        let _ = write!(
            message,
            "<{}>1 ",
            u16::from(self.facility) * 8 + u16::from(severity)
        );
        // The event's own time, as its JSON body writes it (NILVALUE without one).
        match event.time {
            Some(time) if rfc3339::write(&time, &mut message) => {}
            Some(time) => message.extend_from_slice(pbjson_time(&time).as_bytes()),
            None => message.push(b'-'),
        }
        let _ = write!(message, " {} {} - ", self.header, event.kind().short_name());
        if self.ocsf {
            ocsf::encode_line(&event, &mut message)?;
        } else {
            self.json.encode(
                &mut event,
                PartIds::default(),
                &SharedParts::default(),
                &mut message,
            )?;
        }
        // The encoder writes a JSON line; the frame's length delimits the message instead.
        message.pop();
        out.extend_from_slice(itoa::Buffer::new().format(message.len()).as_bytes());
        out.push(b' ');
        out.extend_from_slice(&message);
        Ok(())
    }
}

/// Header fields are printable US-ASCII without spaces, "-" when empty (RFC 5424, 6.2).
fn header_field(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if cleaned.is_empty() {
        "-".to_owned()
    } else {
        cleaned
    }
}

/// A time outside the years the short path writes, as pbjson writes it ("-" if it cannot).
fn pbjson_time(time: &pbjson_types::Timestamp) -> String {
    serde_json::to_value(time)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{EventLoss, ProcessExec};

    use super::*;

    fn format(body: Format) -> SyslogFormat {
        SyslogFormat::new(
            crate::config::Facility::Authpriv.number(),
            "web 1",
            "custos",
            42,
            body,
        )
    }

    /// The syslog frame of `event` with JSON bodies, as text.
    fn framed(event: &Event) -> String {
        framed_as(event, Format::Json)
    }

    fn framed_as(event: &Event, body: Format) -> String {
        let mut out = Vec::new();
        format(body)
            .frame(&event.encode_length_delimited_to_vec(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The message of an octet-counted frame, checked against its count.
    fn message_of(frame: &str) -> &str {
        let (len, message) = frame.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        message
    }

    /// The body after the header (the frame's event has a time, so " - " first ends it).
    fn body_of(message: &str) -> serde_json::Value {
        serde_json::from_str(message.split_once(" - ").unwrap().1).unwrap()
    }

    fn exec_at(seq: u64, nanos: i32) -> Event {
        Event {
            seq,
            time: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos,
            }),
            body: Some(Body::Exec(ProcessExec::default())),
            ..Event::default()
        }
    }

    #[test]
    fn frames_are_octet_counted_rfc5424_with_json_bodies() {
        let text = framed(&exec_at(7, 5));
        let message = message_of(&text);
        // authpriv (10) * 8 + info (6) = 86; the space in the host name is dropped.
        assert!(
            message
                .starts_with("<86>1 2023-11-14T22:13:20.000000005+00:00 web1 custos 42 exec - {"),
            "{message}"
        );
        assert_eq!(body_of(message)["seq"], "7");
    }

    #[test]
    fn ocsf_bodies_replace_the_json_when_configured() {
        let text = framed_as(&exec_at(3, 0), Format::Ocsf);
        let body = body_of(message_of(&text));
        assert_eq!(body["class_uid"], 1007);
        assert_eq!(body["activity_id"], 1);
    }

    #[test]
    fn loss_events_are_warnings_and_unknown_facilities_are_refused() {
        let event = Event {
            body: Some(Body::Loss(EventLoss::default())),
            ..Event::default()
        };
        assert!(framed(&event).contains("<84>1 - "));
    }
}
