//! Loading the configuration: command line, environment and `--config`
//! file in that order of precedence, and printing it with secrets redacted.

use super::*;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Serve,
    PrintConfig,
    /// Apply the schema migrations of the configured meta store.
    Migrate,
    /// Copy meta store `from` into `to`.
    MigrateMeta {
        from: String,
        to: String,
    },
}

/// Configuration errors other than the command line's own.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Includes `--help` and `--version`: call `exit()` on it.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The effective configuration, with what it came from.
#[derive(Debug)]
pub struct Loaded {
    pub action: Action,
    pub args: ServeArgs,
    matches: ArgMatches,
}

impl Loaded {
    /// The effective configuration as TOML, every option included, secrets
    /// redacted (see [`redact`]). Unset options appear as comments.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# Effective tusker configuration (defaults < file < environment < flags).\n\
             # Secrets are redacted.\n",
        );
        for arg in Only::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || arg.get_long().is_none() {
                continue;
            }
            let raw: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let list = arg.get_value_delimiter().is_some();
            let value = if matches!(arg.get_action(), ArgAction::SetTrue) {
                let on = self.matches.get_flag(id);
                Some(toml::Value::Boolean(on))
            } else if list {
                Some(toml::Value::Array(
                    raw.iter()
                        .map(|v| toml::Value::String(redact(id, v)))
                        .collect(),
                ))
            } else {
                raw.first().map(|v| match v.parse::<i64>() {
                    Ok(n) if !is_secret_key(id) => toml::Value::Integer(n),
                    _ => toml::Value::String(redact(id, v)),
                })
            };
            match value {
                Some(v) => out.push_str(&format!("{id} = {v}\n")),
                None => out.push_str(&format!("# {id} is not set\n")),
            }
        }
        out
    }
}

/// Parses the command line (`args` includes the program name), reads the
/// configuration file it names (`--config` / `TUSKER_CONFIG`) and merges:
/// defaults < file < environment < flags.
pub fn load<I, T>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = Cli::command().try_get_matches_from(&argv)?;
    // With `args_conflicts_with_subcommands`, a subcommand is the first
    // argument and takes all the options after it.
    let (action, sub, rest) = match matches.subcommand() {
        Some(("serve", m)) => (Action::Serve, m, 2),
        Some(("config", m)) => (Action::PrintConfig, m, 2),
        Some(("migrate", m)) => (Action::Migrate, m, 2),
        Some(("migrate-meta", m)) => {
            let args = MigrateMetaArgs::from_arg_matches(m)?;
            let matches = Only::command().try_get_matches_from(["tusker"])?;
            return Ok(Loaded {
                action: Action::MigrateMeta {
                    from: args.from,
                    to: args.to,
                },
                args: Only::from_arg_matches(&matches)?.serve,
                matches,
            });
        }
        _ => (Action::Serve, &matches, 1),
    };
    let mut second: Vec<OsString> = vec![argv.first().cloned().unwrap_or_else(|| "tusker".into())];
    if let Some(path) = sub.get_one::<PathBuf>("config") {
        second.extend(file_args(path, sub)?);
    }
    let from_file = second.len() > 1;
    second.extend(argv.iter().skip(rest).cloned());
    let matches = match Only::command().try_get_matches_from(&second) {
        Ok(m) => m,
        Err(e) if from_file && e.kind() != clap::error::ErrorKind::DisplayHelp => {
            let path = sub
                .get_one::<PathBuf>("config")
                .cloned()
                .unwrap_or_default();
            return Err(ConfigError::Invalid {
                path,
                message: e.to_string().trim().to_owned(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let args = Only::from_arg_matches(&matches)?.serve;
    Ok(Loaded {
        action,
        args,
        matches,
    })
}

/// The file's options as flags, leaving out those that the environment or
/// the command line set (they take precedence).
fn file_args(path: &std::path::Path, given: &ArgMatches) -> Result<Vec<OsString>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let command = Only::command();
    let mut out = Vec::new();
    for (key, value) in &table {
        if key == "config" {
            return Err(invalid(
                "`config` cannot be set inside a config file".into(),
            ));
        }
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == key && a.get_long().is_some())
        else {
            return Err(invalid(format!(
                "unknown option `{key}` (options are the flags in snake_case, e.g. base_path)"
            )));
        };
        if matches!(
            given.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = arg.get_long().unwrap_or(key);
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                toml::Value::Boolean(true) => out.push(format!("--{long}").into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(invalid(format!("`{key}` must be true or false"))),
            }
            continue;
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(invalid(format!("`{key}` must be a string or a number"))),
        };
        let text = match value {
            // An empty list means "the default", as an absent key does.
            toml::Value::Array(items) if items.is_empty() => continue,
            toml::Value::Array(items) if arg.get_value_delimiter().is_some() => items
                .iter()
                .map(scalar)
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            v => scalar(v)?,
        };
        out.push(format!("--{long}={text}").into());
    }
    Ok(out)
}

/// Whether an option's value is a secret as a whole.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "key", "password", "token", "credential"]
        .iter()
        .any(|w| key.contains(w))
}

/// What `tusker config` shows of a value: secrets as `REDACTED`, and the
/// password of any URL (`postgres://user:REDACTED@host/db`).
pub fn redact(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        return "REDACTED".into();
    }
    let Some(scheme_end) = value.find("://") else {
        return value.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = value[authority_start..]
        .find(['/', '?', '#'])
        .map_or(value.len(), |i| authority_start + i);
    let authority = &value[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return value.to_owned();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:REDACTED"),
        // A lone userinfo is often a token.
        None => "REDACTED".to_owned(),
    };
    format!(
        "{}{}{}",
        &value[..authority_start],
        user,
        &value[authority_start + at..]
    )
}
