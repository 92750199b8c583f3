//! Experiment configs: serde TOML files with defaults, `--set section.key=value` overrides, and
//! errors that name the file and the key.
//!
//! Config structs use `#[serde(deny_unknown_fields, default)]`, so a missing key takes its
//! default and an unknown key is an error; each struct's `validate` checks values that parse but
//! make no sense.

use std::path::Path;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where a config comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A TOML file; its `extends` is relative to the file.
    File(&'a Path),
    /// TOML text (from Python: a string or a dict); its `extends` is relative to the current
    /// directory.
    Text(&'a str),
    /// The built-in defaults (an empty table).
    Defaults,
}

impl Source<'_> {
    /// What the config's errors call it.
    pub fn name(&self) -> String {
        match self {
            Source::File(path) => format!("config {}", path.display()),
            Source::Text(_) => "the TOML text given".to_string(),
            Source::Defaults => "the defaults".to_string(),
        }
    }

    fn table(&self) -> anyhow::Result<toml::Table> {
        match self {
            Source::File(path) => read_table(path, &mut Vec::new()),
            Source::Text(text) => {
                let table = toml::from_str(text).context("the config text is not valid TOML")?;
                resolve_extends(table, Path::new("."), "the config text", &mut Vec::new())
            }
            Source::Defaults => Ok(toml::Table::new()),
        }
    }
}

/// Reads `path` (or starts from an empty table when `None`), applies `overrides` of the form
/// `section.key=value` (the value is TOML: `0.5`, `true`, `"text"`, `[1, 2]`; a bare word is
/// taken as a string), and deserialises the result into `T`.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, overrides: &[String]) -> anyhow::Result<T> {
    load_from(path.map_or(Source::Defaults, Source::File), overrides)
}

/// [`load`] from any [`Source`].
pub fn load_from<T: DeserializeOwned>(source: Source, overrides: &[String]) -> anyhow::Result<T> {
    let mut table = source.table()?;
    for item in overrides {
        apply_override(&mut table, item)?;
    }
    // Through the text form, so that errors point at the offending key.
    let text = toml::to_string(&table)?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid config (from {}{}):\n{e}",
            match source {
                Source::File(path) => path.display().to_string(),
                other => other.name(),
            },
            if overrides.is_empty() { String::new() } else { format!(" with --set {}", overrides.join(" --set ")) }
        )
    })
}

/// Reads a config file. A top-level `extends = "other.toml"` (relative to the file) loads that
/// file first and lays this one over it, key by key (sections merge; other values replace), so
/// a baseline config states only how it differs from the main one.
fn read_table(path: &Path, chain: &mut Vec<std::path::PathBuf>) -> anyhow::Result<toml::Table> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canonical) {
        bail!("config file {} extends itself (through {:?})", path.display(), chain);
    }
    chain.push(canonical);
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let name = format!("config file {}", path.display());
    resolve_extends(table, path.parent().unwrap_or(Path::new(".")), &name, chain)
}

/// Loads the file a table's `extends` names (relative to `dir`) and lays the table over it.
fn resolve_extends(
    mut table: toml::Table,
    dir: &Path,
    name: &str,
    chain: &mut Vec<std::path::PathBuf>,
) -> anyhow::Result<toml::Table> {
    match table.remove("extends") {
        None => Ok(table),
        Some(toml::Value::String(base)) => {
            let mut merged =
                read_table(&dir.join(&base), chain).with_context(|| format!("{name}: `extends = \"{base}\"`"))?;
            merge(&mut merged, table);
            Ok(merged)
        }
        Some(other) => bail!("{name}: `extends` must be a file name, got {other}"),
    }
}

/// Lays `over` onto `base`: tables merge recursively, every other value replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets `section.key=value` in `table`, creating sections as needed.
pub fn apply_override(table: &mut toml::Table, item: &str) -> anyhow::Result<()> {
    let Some((path, raw)) = item.split_once('=') else {
        bail!("--set `{item}`: expected section.key=value");
    };
    let keys: Vec<&str> = path.trim().split('.').map(str::trim).collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("--set `{item}`: the key path `{path}` has an empty part");
    }
    let value = parse_value(raw.trim());
    let (last, sections) = keys.split_last().expect("split always yields one part");
    let mut current = table;
    for (depth, key) in sections.iter().enumerate() {
        let entry = current.entry(key.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            other => bail!("--set `{item}`: `{}` is a {}, not a section", keys[..=depth].join("."), other.type_str()),
        };
    }
    current.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    // Parse as the right-hand side of a TOML assignment; anything else is a plain string.
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// The config as TOML text, as printed at start and saved in the run directory.
pub fn to_toml<T: Serialize>(config: &T) -> anyhow::Result<String> {
    Ok(toml::to_string_pretty(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Train {
        lr: f64,
        name: String,
        steps: Vec<u32>,
    }

    impl Default for Train {
        fn default() -> Self {
            Self { lr: 1e-3, name: "run".into(), steps: vec![] }
        }
    }

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Config {
        train: Train,
    }

    #[test]
    fn overrides_parse_toml_values_and_bare_words_as_strings() {
        let c: Config =
            load(None, &["train.lr=0.5".into(), "train.name=fast".into(), "train.steps=[1, 2]".into()]).unwrap();
        assert_eq!(c.train, Train { lr: 0.5, name: "fast".into(), steps: vec![1, 2] });
    }

    #[test]
    fn missing_keys_take_defaults() {
        let c: Config = load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors_naming_the_key() {
        let err = load::<Config>(None, &["train.lrr=0.5".into()]).unwrap_err().to_string();
        assert!(err.contains("lrr"), "{err}");
        let err = load::<Config>(None, &["train.lr=\"fast\"".into()]).unwrap_err().to_string();
        assert!(err.contains("lr"), "{err}");
        let err = load::<Config>(None, &["train.lr=1".into(), "train.lr.x=2".into()]).unwrap_err().to_string();
        assert!(err.contains("train.lr"), "{err}");
        assert!(load::<Config>(None, &["train".into()]).is_err());
    }

    #[test]
    fn a_config_extends_another_and_overrides_key_by_key() {
        let dir = std::env::temp_dir().join(format!("m3ixup-config-extends-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("base.toml"), "[train]\nlr = 0.5\nname = \"base\"\nsteps = [1]\n").unwrap();
        std::fs::write(dir.join("child.toml"), "extends = \"base.toml\"\n[train]\nname = \"child\"\n").unwrap();
        let c: Config = load(Some(&dir.join("child.toml")), &["train.steps=[2]".into()]).unwrap();
        assert_eq!(c.train, Train { lr: 0.5, name: "child".into(), steps: vec![2] });
        std::fs::write(dir.join("loop.toml"), "extends = \"loop.toml\"\n").unwrap();
        let err = format!("{:#}", load::<Config>(Some(&dir.join("loop.toml")), &[]).unwrap_err());
        assert!(err.contains("extends itself"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let err = load::<Config>(Some(Path::new("configs/nope.toml")), &[]).unwrap_err().to_string();
        assert!(err.contains("configs/nope.toml"), "{err}");
    }
}
