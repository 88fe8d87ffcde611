//! The TOML configuration. Unknown keys are errors: a misspelt key must not silently leave a
//! default in force on a security sensor.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// The configuration used when `custos run` gets no --config: every sensor on, JSON to stdout.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../packaging/custos.toml");

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sensors: Sensors,
    #[serde(default)]
    pub kernel: Kernel,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sensors {
    #[serde(default = "yes")]
    pub process: bool,
}

impl Default for Sensors {
    fn default() -> Self {
        Self { process: true }
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    #[serde(default = "default_ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
    #[serde(default)]
    pub attach: AttachMode,
}

impl Default for Kernel {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: default_ring_buffer_bytes(),
            attach: AttachMode::Auto,
        }
    }
}

/// Which program types the hooks may use.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// The best the kernel accepts: tp_btf, else the classic tracepoint.
    #[default]
    Auto,
    /// Classic tracepoints only (for kernels whose tp_btf support misbehaves).
    Tracepoint,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One canonical-proto3-JSON `custos.v1.Event` per line.
    Json,
    /// Length-delimited `custos.v1.Event` messages (a varint length before each).
    Protobuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    Stdout {
        #[serde(default = "json")]
        format: Format,
    },
    File {
        path: PathBuf,
        #[serde(default = "json")]
        format: Format,
    },
}

fn yes() -> bool {
    true
}

fn json() -> Format {
    Format::Json
}

fn default_ring_buffer_bytes() -> u32 {
    8 * 1024 * 1024
}

impl Config {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: Config =
            toml::from_str(text).with_context(|| format!("invalid configuration in {origin}"))?;
        config
            .validate()
            .with_context(|| format!("invalid configuration in {origin}"))?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn embedded_default() -> Result<Self> {
        Self::parse(EMBEDDED_DEFAULT, "the embedded default configuration")
    }

    fn validate(&self) -> Result<()> {
        let ring = self.kernel.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 64 * 1024 {
            bail!(
                "kernel.ring_buffer_bytes = {ring}: must be a power of two of at least 65536 \
                 (for example 8388608)"
            );
        }
        if self.sinks.is_empty() {
            bail!("no [[sinks]]: add at least one, e.g. [[sinks]] type = \"stdout\"");
        }
        for sink in &self.sinks {
            if let SinkConfig::File { path, .. } = sink {
                if path.as_os_str().is_empty() {
                    bail!("a file sink has an empty path");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid_and_writes_json_to_stdout() {
        let config = Config::embedded_default().unwrap();
        assert!(config.sensors.process);
        assert_eq!(
            config.sinks,
            vec![SinkConfig::Stdout {
                format: Format::Json
            }]
        );
    }

    #[test]
    fn file_sinks_parse_with_their_format() {
        let config = Config::parse(
            "[[sinks]]\ntype = \"file\"\npath = \"/tmp/x.pb\"\nformat = \"protobuf\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(
            config.sinks,
            vec![SinkConfig::File {
                path: "/tmp/x.pb".into(),
                format: Format::Protobuf
            }]
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key_and_line() {
        let err = Config::parse(
            "[sensors]\nproces = true\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("proces"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = Config::parse(
            "[kernel]\nring_buffer_bytes = 1000\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("power of two"));
        let err = Config::parse("[[sinks]]\ntype = \"kafka\"\n", "t").unwrap_err();
        assert!(format!("{err:#}").contains("kafka"));
        let err = Config::parse("sinks = []\n", "t").unwrap_err();
        assert!(format!("{err:#}").contains("no [[sinks]]"));
    }
}
