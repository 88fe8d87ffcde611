//! Timestamps as the JSON encoding writes them (RFC 3339 in UTC, `+00:00`, with 0, 3, 6 or 9
//! fraction digits as the value needs: what pbjson writes through chrono), without chrono's
//! general formatting machinery, since every event carries one.
use std::cell::Cell;

use pbjson_types::Timestamp;

/// 0000-01-01T00:00:00 and 9999-12-31T23:59:59: the years written with four digits.
const FIRST_SECOND: i64 = -62_167_219_200;
const LAST_SECOND: i64 = 253_402_300_799;

/// True for the times this module writes: the years 0 to 9999, valid nanoseconds. Others are
/// left to pbjson.
pub fn writable(time: &Timestamp) -> bool {
    (FIRST_SECOND..=LAST_SECOND).contains(&time.seconds) && (0..1_000_000_000).contains(&time.nanos)
}

/// Appends `time` as a quoted JSON string; false (nothing written) where not [`writable`].
pub fn write_quoted(time: &Timestamp, out: &mut Vec<u8>) -> bool {
    if !writable(time) {
        return false;
    }
    let mut text = [b'"'; 1 + LONGEST + 1];
    let end = 1 + fill(time, &mut text[1..=LONGEST]);
    out.extend_from_slice(&text[..=end]);
    true
}

/// The zone every timestamp is written in.
const UTC: &[u8] = b"+00:00";
/// The length of `YYYY-MM-DDTHH:MM:SS`.
const DATE_TIME: usize = 19;
/// The length of the longest timestamp written: nine fraction digits.
const LONGEST: usize = DATE_TIME + 10 + UTC.len();

thread_local! {
    /// The last second written and its date and time: events come in time order, so most
    /// timestamps fall in the same second as the one before.
    static LAST_SECOND_TEXT: Cell<(i64, [u8; DATE_TIME])> =
        const { Cell::new((i64::MIN, [0; DATE_TIME])) };
}

/// Appends `time` (syslog's TIMESTAMP has the same form); false (nothing written) where not
/// [`writable`]. Built in a stack buffer and appended once: pushing each digit to `out` checked
/// its capacity per byte, and every event carries a timestamp.
pub fn write(time: &Timestamp, out: &mut Vec<u8>) -> bool {
    if !writable(time) {
        return false;
    }
    let mut text = [0; LONGEST];
    let end = fill(time, &mut text);
    out.extend_from_slice(&text[..end]);
    true
}

/// Writes a [`writable`] `time` at the start of `text`; how many bytes it took.
fn fill(time: &Timestamp, text: &mut [u8]) -> usize {
    text[..DATE_TIME].copy_from_slice(&date_time(time.seconds));
    let nanos = time.nanos as u32;
    let fraction = if nanos == 0 {
        0
    } else if nanos.is_multiple_of(1_000_000) {
        digits(&mut text[20..23], nanos / 1_000_000);
        4
    } else if nanos.is_multiple_of(1_000) {
        digits(&mut text[20..26], nanos / 1_000);
        7
    } else {
        digits(&mut text[20..29], nanos);
        10
    };
    if fraction > 0 {
        text[DATE_TIME] = b'.';
    }
    let end = DATE_TIME + fraction;
    text[end..end + UTC.len()].copy_from_slice(UTC);
    end + UTC.len()
}

/// `YYYY-MM-DDTHH:MM:SS` of a writable second, from the last one's when it is the same.
fn date_time(seconds: i64) -> [u8; DATE_TIME] {
    let (last, text) = LAST_SECOND_TEXT.get();
    if last == seconds {
        return text;
    }
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00";
    digits(&mut text[0..4], year as u32);
    digits(&mut text[5..7], month);
    digits(&mut text[8..10], day);
    digits(&mut text[11..13], second_of_day / 3600);
    digits(&mut text[14..16], second_of_day / 60 % 60);
    digits(&mut text[17..19], second_of_day % 60);
    LAST_SECOND_TEXT.set((seconds, text));
    text
}

/// `value` in exactly `place.len()` decimal digits, zero-padded (the higher digits dropped).
/// Two digits at a time from a table: a nanosecond fraction is written for nearly every
/// event, and halving its divisions showed in the encoder's instruction count.
fn digits(place: &mut [u8], mut value: u32) {
    let mut end = place.len();
    while end >= 2 {
        let pair = (value % 100) as usize * 2;
        place[end - 2..end].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        value /= 100;
        end -= 2;
    }
    if end == 1 {
        place[0] = b'0' + (value % 10) as u8;
    }
}

/// "00", "01", ... "99", one after another.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// Year, month and day of a count of days since 1970-01-01 (proleptic Gregorian calendar;
/// the "days from civil" algorithm run backwards).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_second_is_never_written_for_another() {
        let times = [
            1_764_720_000,
            1_764_720_001,
            1_764_720_000,
            -1,
            0,
            86_400,
            86_400,
        ];
        for (index, seconds) in times.into_iter().enumerate() {
            let time = Timestamp {
                seconds,
                nanos: index as i32,
            };
            let mut ours = Vec::new();
            assert!(write_quoted(&time, &mut ours));
            assert_eq!(ours, serde_json::to_vec(&time).unwrap(), "{time:?}");
        }
    }

    #[test]
    fn writes_what_pbjson_writes() {
        let mut seconds = FIRST_SECOND;
        let nanos = [0, 5_000_000, 120_000, 999_999_999, 1, 100_000_000];
        let mut checked = 0;
        while seconds <= LAST_SECOND {
            for &nanos in &nanos {
                let time = Timestamp { seconds, nanos };
                let mut ours = Vec::new();
                assert!(write_quoted(&time, &mut ours));
                let pbjson = serde_json::to_vec(&time).unwrap();
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(pbjson).unwrap()
                );
                checked += 1;
            }
            // Steps that land on every kind of day: leap days, month and year ends.
            seconds += 86_400 * 13 + 3_607;
        }
        assert!(checked > 1_000_000);
        let mut out = Vec::new();
        assert!(!write_quoted(
            &Timestamp {
                seconds: FIRST_SECOND - 1,
                nanos: 0
            },
            &mut out
        ));
        assert!(!write_quoted(
            &Timestamp {
                seconds: LAST_SECOND + 1,
                nanos: 0
            },
            &mut out
        ));
        assert!(!write_quoted(
            &Timestamp {
                seconds: 0,
                nanos: -1
            },
            &mut out
        ));
        assert!(out.is_empty());
    }
}
