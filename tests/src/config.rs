//! Sensor configurations for the tests, built from typed values. The toml crate writes the
//! file, so paths with quotes, backslashes or spaces come out as the daemon will read them.
use std::path::Path;

use toml::{Table, Value};

/// A configuration file for [`crate::Sensor`], which adds its own two file sinks.
#[derive(Clone, Debug, Default)]
pub struct TestConfig {
    doc: Table,
}

/// A path as a TOML string; the tests' temporary paths are UTF-8.
fn path(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_owned()
}

/// A directory as a path prefix: with its trailing slash.
fn prefix(dir: &Path) -> String {
    format!("{}/", path(dir))
}

/// The table at `keys` in `doc`, created as needed.
fn table_at<'a>(doc: &'a mut Table, keys: &[&str]) -> &'a mut Table {
    keys.iter().fold(doc, |table, key| {
        table
            .entry(key.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{key} is not a table"))
    })
}

impl TestConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` in the section at `section` (`["sinks", "tls"]` is `[sinks.tls]`).
    pub fn set(mut self, section: &[&str], key: &str, value: impl Into<Value>) -> Self {
        table_at(&mut self.doc, section).insert(key.to_owned(), value.into());
        self
    }

    /// Appends `entry` to the array of tables at `array` (`["alerts", "rules"]`).
    pub fn push(mut self, array: &[&str], entry: Entry) -> Self {
        let (last, parent) = array.split_last().expect("an array name");
        let list = table_at(&mut self.doc, parent)
            .entry(last.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        list.as_array_mut()
            .unwrap_or_else(|| panic!("{last} is not an array"))
            .push(Value::Table(entry.0));
        self
    }

    /// Reports file opens under `dir` only, every one (no deduplication).
    pub fn files_only_under(self, dir: &Path) -> Self {
        self.include_paths(&[dir]).dedup_window_ms(0)
    }

    pub fn include_paths(self, dirs: &[impl AsRef<Path>]) -> Self {
        self.set(&["file"], "include_paths", prefixes(dirs))
    }

    pub fn exclude_paths(self, dirs: &[impl AsRef<Path>]) -> Self {
        self.set(&["file"], "exclude_paths", prefixes(dirs))
    }

    pub fn exclude_read_paths(self, dirs: &[impl AsRef<Path>]) -> Self {
        self.set(&["file"], "exclude_read_paths", prefixes(dirs))
    }

    pub fn dedup_window_ms(self, ms: i64) -> Self {
        self.set(&["file"], "dedup_window_ms", ms)
    }

    pub fn process_sensor(self, on: bool) -> Self {
        self.set(&["sensors"], "process", on)
    }

    pub fn file_sensor(self, on: bool) -> Self {
        self.set(&["sensors"], "file", on)
    }

    /// `network.loopback`: whether connections with loopback peers are reported.
    pub fn network_loopback(self, on: bool) -> Self {
        self.set(&["network"], "loopback", on)
    }

    pub fn ring_buffer_bytes(self, bytes: i64) -> Self {
        self.set(&["kernel"], "ring_buffer_bytes", bytes)
    }

    /// `kernel.attach`: which program types may be tried.
    pub fn attach(self, mode: &str) -> Self {
        self.set(&["kernel"], "attach", mode)
    }

    pub fn identity_map(self, map: &Path) -> Self {
        self.set(&["identity"], "map", path(map))
    }

    pub fn spool(self, dir: &Path) -> Self {
        self.set(&["spool"], "dir", path(dir))
    }

    pub fn spool_max_bytes(self, bytes: i64) -> Self {
        self.set(&["spool"], "max_bytes", bytes)
    }

    pub fn sink(self, sink: Entry) -> Self {
        self.push(&["sinks"], sink)
    }

    pub fn device_rule(self, rule: Entry) -> Self {
        self.push(&["devices", "rules"], rule)
    }

    pub fn device_summary_seconds(self, seconds: i64) -> Self {
        self.set(&["devices"], "summary_seconds", seconds)
    }

    pub fn alert_rule(self, rule: Entry) -> Self {
        self.push(&["alerts", "rules"], rule)
    }

    pub fn pseudonyms(self, key_file: &Path) -> Self {
        self.privacy_key(key_file)
            .set(&["privacy"], "pseudonymize", true)
    }

    pub fn privacy_key(self, key_file: &Path) -> Self {
        self.set(&["privacy"], "key_file", path(key_file))
    }

    /// `privacy.file_events`: which file opens are collected at all.
    pub fn file_events(self, which: &str) -> Self {
        self.set(&["privacy"], "file_events", which)
    }

    pub fn sink_view(self, view: Entry) -> Self {
        self.push(&["privacy", "sink_views"], view)
    }

    pub fn tail_socket(self, socket: &Path) -> Self {
        self.set(&["tail"], "socket", path(socket))
    }

    pub fn tail_group(self, group: Entry) -> Self {
        self.push(&["tail", "groups"], group)
    }

    pub fn metrics_listen(self, address: &str) -> Self {
        self.set(&["metrics"], "listen", address)
    }

    pub fn status_socket(self, socket: &Path) -> Self {
        self.set(&["status"], "socket", path(socket))
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.doc).expect("a table serialises")
    }
}

fn prefixes(dirs: &[impl AsRef<Path>]) -> Vec<String> {
    dirs.iter().map(|dir| prefix(dir.as_ref())).collect()
}

/// One entry of an array of tables: a sink, a rule, a view.
#[derive(Clone, Debug, Default)]
pub struct Entry(Table);

impl Entry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub fn path(self, key: &str, value: &Path) -> Self {
        self.set(key, path(value))
    }

    /// A directory as a path prefix (with its trailing slash).
    pub fn prefix(self, key: &str, dirs: &[impl AsRef<Path>]) -> Self {
        self.set(key, prefixes(dirs))
    }

    /// A nested table, such as a sink's `tls`.
    pub fn table(self, key: &str, table: Entry) -> Self {
        self.set(key, Value::Table(table.0))
    }

    /// A file sink.
    pub fn file_sink(file: &Path, format: &str) -> Self {
        Self::new()
            .set("type", "file")
            .path("path", file)
            .set("format", format)
    }

    /// A TCP sink named `name`.
    pub fn tcp_sink(name: &str, address: &str) -> Self {
        Self::new()
            .set("type", "tcp")
            .set("name", name)
            .set("address", address)
    }
}
