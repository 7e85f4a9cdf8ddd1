//! Where settings come from, and in which order they win: flags over `VIGIL_<SETTING>`
//! environment variables over the `--config` TOML file over the defaults; `PORT` gives the bind
//! address when none of those does (`0.0.0.0:$PORT`, as Gunicorn does).
//!
//! The names all come from the settings table ([`FIELDS`]): a setting's file key is its name,
//! its environment variable is `VIGIL_` and the name in capitals, its flag the name with dashes.
//! Every value of every layer is checked, not only the winning one (a bad value in the file is
//! an error even when a flag overrides it), and a file key or a `VIGIL_*` variable that names
//! no setting is an error naming it, with the setting probably meant.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::{env_name, flag, Cli, Origin, Settings, SettingsError, ENV_PREFIX, FIELDS};

/// The variable that names the config file when `--config` does not.
const CONFIG_ENV: &str = "VIGIL_CONFIG";
/// The variable platforms such as Heroku and Cloud Run set to the port to listen on.
const PORT_ENV: &str = "PORT";

/// What the `vigil` binary was asked to do with its settings.
///
/// ```
/// use vigil::{Mode, Settings};
///
/// let loaded = Settings::load(&["--check-config"], std::iter::empty::<(&str, &str)>()).unwrap();
/// assert_eq!(loaded.mode, Mode::CheckConfig);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Start the server (no `--print-config` or `--check-config`).
    Serve,
    /// `--print-config`: print the effective settings and exit (the settings are checked too).
    PrintConfig,
    /// `--check-config`: check the settings and exit.
    CheckConfig,
}

/// Settings loaded by [`Settings::load`], with where each value came from.
///
/// ```
/// use vigil::Settings;
///
/// let loaded = Settings::load(&["--threads", "2"], [("VIGIL_ACCESS_LOG", "on")]).unwrap();
/// let toml = loaded.to_toml();
/// assert!(toml.contains("threads = 2") && toml.contains("# --threads"));
/// assert!(toml.contains("access_log = true") && toml.contains("# VIGIL_ACCESS_LOG"));
/// ```
#[derive(Clone, Debug)]
pub struct LoadedSettings {
    /// The effective settings, validated.
    pub settings: Settings,
    /// What the binary was asked to do.
    pub mode: Mode,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Where each setting came from, in [`FIELDS`] order.
    origins: Vec<Origin>,
}

impl LoadedSettings {
    /// Applies the `vigil` binary's own defaults where they differ from the library's, to the
    /// settings nothing set: the admin listener on 127.0.0.1:9181 (the library's default is
    /// off, so that servers embedded side by side never collide).
    ///
    /// ```
    /// let loaded = vigil::Settings::load(&[], std::iter::empty::<(&str, &str)>()).unwrap();
    /// assert_eq!(loaded.settings.get_admin_bind(), None);
    /// assert_eq!(loaded.with_binary_defaults().settings.get_admin_bind(), Some("127.0.0.1:9181".parse().unwrap()));
    /// ```
    pub fn with_binary_defaults(mut self) -> Self {
        if *self.origin("admin_bind") == Origin::Default {
            self.settings.admin_bind = Some(super::BINARY_ADMIN_BIND);
        }
        self
    }

    /// Where the setting `name` (a field of [`Settings`], e.g. `"max_body"`) came from.
    ///
    /// # Panics
    ///
    /// If no setting is named `name`.
    pub fn origin(&self, name: &str) -> &Origin {
        let i = FIELDS.iter().position(|f| *f == name).unwrap_or_else(|| panic!("no setting is named {name:?}"));
        &self.origins[i]
    }

    /// The effective settings as a TOML file that `--config` reads back, one line per setting,
    /// each with a comment saying where its value came from: what `--print-config` prints.
    pub fn to_toml(&self) -> String {
        let s = &self.settings;
        let mut out = String::from(
            "# vigil's effective settings; precedence: flags > VIGIL_* environment > config file > defaults.\n",
        );
        match &self.config_file {
            Some(path) => out.push_str(&format!("# Config file: {}\n", path.display())),
            None => out.push_str("# Config file: none (--config FILE or VIGIL_CONFIG=FILE)\n"),
        }
        out.push_str("# Each comment says where the value came from. This text is a valid --config file.\n");
        let lines: Vec<(String, String)> = s
            .toml_values()
            .into_iter()
            .zip(&self.origins)
            .map(|((name, value), origin)| {
                let mut note = origin.to_string();
                match name {
                    "backlog" if s.backlog.is_none() => note.push_str(&format!(" (auto: {})", s.effective_backlog())),
                    "max_abandoned" if s.max_abandoned.is_none() => {
                        note.push_str(&format!(" (auto: {})", s.effective_max_abandoned()))
                    }
                    _ => {}
                }
                (format!("{name} = {value}"), note)
            })
            .collect();
        let width = lines.iter().map(|(line, _)| line.len()).max().unwrap_or(0);
        for (line, note) in lines {
            out.push_str(&format!("{line:width$}  # {note}\n"));
        }
        out
    }

    /// How many settings came from where: `23 settings: 1 from flags, 2 from the environment,
    /// 3 from vigil.toml, 17 defaults`.
    pub fn summary(&self) -> String {
        let count = |pred: fn(&Origin) -> bool| self.origins.iter().filter(|o| pred(o)).count();
        let mut parts = vec![
            format!("{} from flags", count(|o| matches!(o, Origin::Flag(_)))),
            format!("{} from the environment", count(|o| matches!(o, Origin::Env(_)))),
        ];
        if let Some(path) = &self.config_file {
            parts.push(format!("{} from {}", count(|o| matches!(o, Origin::File { .. })), path.display()));
        }
        parts.push(format!("{} defaults", count(|o| matches!(o, Origin::Default))));
        format!("{} settings: {}", self.origins.len(), parts.join(", "))
    }
}

/// One layer's text for a setting: the text, or why there is none usable (a file value that is
/// an array, an environment value that is not UTF-8), and where it came from.
type Layer = HashMap<&'static str, (Result<String, String>, Origin)>;

/// Applies the layers to the defaults: the file named by `cli.config` (or `VIGIL_CONFIG` in
/// `env`), then the `VIGIL_*` variables of `env`, then the flags of `cli`; then `PORT`; then
/// validates.
pub(super) fn resolve(cli: Cli, env: Vec<(OsString, OsString)>) -> Result<LoadedSettings, SettingsError> {
    let env = read_env(env)?;
    let config_file = cli.config.as_ref().map(PathBuf::from).or(env.config);
    let file = match &config_file {
        Some(path) => read_file(path)?,
        None => Layer::new(),
    };
    let flags: Layer =
        cli.given().into_iter().map(|(name, text)| (name, (Ok(text.to_string()), Origin::Flag(flag(name))))).collect();

    let mut settings = Settings::default();
    let mut origins = vec![Origin::Default; FIELDS.len()];
    for (i, &name) in FIELDS.iter().enumerate() {
        // Lowest precedence first, each value checked on its own; the last one found wins.
        for layer in [&file, &env.settings, &flags] {
            if let Some((text, origin)) = layer.get(name) {
                let invalid = |message| SettingsError::Invalid { setting: name, origin: Some(origin.clone()), message };
                let text = text.as_ref().map_err(|message| invalid(message.clone()))?;
                let mut alone = Settings::default();
                alone.set_text(name, text).map_err(invalid)?;
                alone.check_ranges().map_err(|e| invalid(e.message()))?;
                settings.set_text(name, text).map_err(invalid)?;
                origins[i] = origin.clone();
            }
        }
    }

    let bind = FIELDS.iter().position(|f| *f == "bind").expect("bind is a setting");
    if let (Origin::Default, Some(port)) = (&origins[bind], env.port) {
        let origin = Origin::Env(PORT_ENV.into());
        let invalid = |message| SettingsError::Invalid { setting: "bind", origin: Some(origin.clone()), message };
        let port = port.map_err(invalid)?;
        let number = port
            .trim()
            .parse::<u16>()
            .map_err(|_| invalid(format!("expected a port number from 0 to 65535, got {port:?}")))?;
        settings.bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, number));
        origins[bind] = origin;
    }

    settings.validate().map_err(|err| match err {
        SettingsError::Invalid { setting, origin: None, message } => {
            let i = FIELDS.iter().position(|f| *f == setting).expect("validate names a setting");
            SettingsError::Invalid { setting, origin: Some(origins[i].clone()), message }
        }
        other => other,
    })?;
    let mode = if cli.print_config {
        Mode::PrintConfig
    } else if cli.check_config {
        Mode::CheckConfig
    } else {
        Mode::Serve
    };
    Ok(LoadedSettings { settings, mode, config_file, origins })
}

/// What the environment says: the settings' variables, `VIGIL_CONFIG` and `PORT`.
struct EnvLayer {
    settings: Layer,
    config: Option<PathBuf>,
    port: Option<Result<String, String>>,
}

/// Picks `VIGIL_*` and `PORT` out of `env`; any other `VIGIL_*` variable is an error.
fn read_env(env: Vec<(OsString, OsString)>) -> Result<EnvLayer, SettingsError> {
    let mut layer = EnvLayer { settings: Layer::new(), config: None, port: None };
    let mut unknown = Vec::new();
    for (key, value) in env {
        let text = value.into_string().map_err(|bad| format!("the value {bad:?} is not valid UTF-8"));
        let Some(key) = key.to_str().map(str::to_string) else {
            if key.to_string_lossy().starts_with(ENV_PREFIX) {
                unknown.push((key.to_string_lossy().into_owned(), None));
            }
            continue;
        };
        if key == PORT_ENV {
            layer.port = Some(text);
        } else if key == CONFIG_ENV {
            layer.config =
                Some(PathBuf::from(text.map_err(|message| SettingsError::File {
                    path: PathBuf::from(format!("${CONFIG_ENV}")),
                    message,
                })?));
        } else if let Some(rest) = key.strip_prefix(ENV_PREFIX) {
            match FIELDS.iter().find(|f| env_name(f) == key) {
                Some(&name) => {
                    layer.settings.insert(name, (text, Origin::Env(key)));
                }
                None => {
                    let wanted = rest.to_ascii_lowercase();
                    let suggestion = closest(&wanted)
                        .map(env_name)
                        .or_else(|| closest_to(&wanted, &["config"]).map(|_| CONFIG_ENV.to_string()));
                    unknown.push((key, suggestion));
                }
            }
        }
    }
    if unknown.is_empty() {
        Ok(layer)
    } else {
        unknown.sort();
        Err(SettingsError::UnknownEnv(unknown))
    }
}

/// Reads the TOML file at `path`: one `key = value` per setting, at the top level.
fn read_file(path: &Path) -> Result<Layer, SettingsError> {
    let file_error = |message: String| SettingsError::File { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table = DeTable::parse(&text).map_err(|mut e| {
        e.set_input(Some(&text));
        file_error(e.to_string().trim_end().to_string())
    })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut layer = Layer::new();
    let mut unknown = Vec::new();
    for (key, value) in entries {
        let line = line_of(key.span().start);
        match FIELDS.iter().find(|f| **f == key.get_ref().as_ref()) {
            Some(&name) => {
                let origin = Origin::File { path: path.to_path_buf(), line };
                layer.insert(name, (toml_text(value.get_ref()), origin));
            }
            None => unknown.push((key.get_ref().to_string(), line, closest(key.get_ref()))),
        }
    }
    if unknown.is_empty() {
        Ok(layer)
    } else {
        Err(SettingsError::UnknownKeys { path: path.to_path_buf(), keys: unknown })
    }
}

/// A TOML value as the text a flag would carry: strings as they are, numbers as written
/// (integers in decimal), booleans as `true`/`false`.
fn toml_text(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(n) => i128::from_str_radix(n.as_str(), n.radix())
            .map(|n| n.to_string())
            .map_err(|_| format!("integer {n} is out of range")),
        DeValue::Float(x) => Ok(x.as_str().to_string()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, a number or a boolean, got {}", other.type_str())),
    }
}

/// The setting whose name is closest to `name`, if one is close enough to be a typo.
fn closest(name: &str) -> Option<&'static str> {
    closest_to(name, FIELDS)
}

fn closest_to(name: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let name = name.to_ascii_lowercase().replace('-', "_");
    candidates
        .iter()
        .map(|c| (edit_distance(&name, c), *c))
        .filter(|&(d, c)| d <= 2.max(c.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, with a swap of two neighbours counting as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::LogFormat;

    /// A config file with `text`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!("vigil-settings-{}-{}.toml", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn arg(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<LoadedSettings, SettingsError> {
        Settings::load(args, env.iter().copied())
    }

    fn file_origin(file: &TempFile, line: usize) -> Origin {
        Origin::File { path: file.0.clone(), line }
    }

    #[test]
    fn file_overrides_defaults_and_records_its_lines() {
        let file = TempFile::new("# comment\nthreads = 8\nmax_body = \"1m\"\ntimeout = 2.5\naccess_log = true\n");
        let loaded = load(&["--config", file.arg()], &[]).unwrap();
        let s = &loaded.settings;
        assert_eq!((s.threads, s.max_body, s.timeout, s.access_log), (8, 1 << 20, Duration::from_millis(2500), true));
        assert_eq!(loaded.origin("threads"), &file_origin(&file, 2));
        assert_eq!(loaded.origin("access_log"), &file_origin(&file, 5));
        assert_eq!(loaded.origin("keepalive"), &Origin::Default);
        assert_eq!(loaded.config_file.as_deref(), Some(file.0.as_path()));
    }

    #[test]
    fn environment_overrides_the_file() {
        let file = TempFile::new("threads = 8\ntimeout = \"9s\"\n");
        let loaded = load(&["--config", file.arg()], &[("VIGIL_THREADS", "6")]).unwrap();
        assert_eq!(loaded.settings.threads, 6);
        assert_eq!(loaded.origin("threads"), &Origin::Env("VIGIL_THREADS".into()));
        assert_eq!(loaded.settings.timeout, Duration::from_secs(9));
        assert_eq!(loaded.origin("timeout"), &file_origin(&file, 2));
    }

    #[test]
    fn flags_override_the_environment_and_the_file() {
        let file = TempFile::new("threads = 8\nmax_body = \"1m\"\n");
        let env = [("VIGIL_THREADS", "6"), ("VIGIL_MAX_BODY", "2m")];
        let loaded = load(&["--config", file.arg(), "--threads", "3", "--max-body=3m"], &env).unwrap();
        assert_eq!((loaded.settings.threads, loaded.settings.max_body), (3, 3 << 20));
        assert_eq!(loaded.origin("threads"), &Origin::Flag("--threads".into()));
        assert_eq!(loaded.origin("max_body"), &Origin::Flag("--max-body".into()));
    }

    #[test]
    fn environment_overrides_defaults_without_a_file() {
        let env = [("VIGIL_LOG_FORMAT", "json"), ("VIGIL_ADMIN_BIND", "off"), ("VIGIL_BACKLOG", "auto")];
        let loaded = load(&[], &env).unwrap();
        assert_eq!((loaded.settings.log_format, loaded.settings.admin_bind), (LogFormat::Json, None));
        assert_eq!(loaded.config_file, None);
    }

    #[test]
    fn vigil_config_names_the_file_and_config_flag_wins_over_it() {
        let by_env = TempFile::new("threads = 5\n");
        let by_flag = TempFile::new("threads = 7\n");
        let loaded = load(&[], &[("VIGIL_CONFIG", by_env.arg())]).unwrap();
        assert_eq!(loaded.settings.threads, 5);
        let loaded = load(&["--config", by_flag.arg()], &[("VIGIL_CONFIG", by_env.arg())]).unwrap();
        assert_eq!(loaded.settings.threads, 7);
    }

    #[test]
    fn switches_take_words_in_the_environment_and_booleans_or_words_in_the_file() {
        for (text, want) in [("1", true), ("on", true), ("YES", true), ("true", true), ("0", false), ("off", false)] {
            let loaded = load(&[], &[("VIGIL_ACCESS_LOG", text)]).unwrap();
            assert_eq!(loaded.settings.access_log, want, "{text}");
        }
        let file = TempFile::new("access_log = \"on\"\n");
        assert!(load(&["--config", file.arg()], &[]).unwrap().settings.access_log);
        let file = TempFile::new("access_log = true\n");
        let loaded = load(&["--config", file.arg()], &[("VIGIL_ACCESS_LOG", "off")]).unwrap();
        assert!(!loaded.settings.access_log, "the environment turns off what the file turned on");
    }

    #[test]
    fn file_integers_in_any_radix_and_with_underscores_are_numbers() {
        let file = TempFile::new("threads = 0x10\nmax_connections = 10_000\nmax_body = 1_048_576\n");
        let s = load(&["--config", file.arg()], &[]).unwrap().settings;
        assert_eq!((s.threads, s.max_connections, s.max_body), (16, 10_000, 1 << 20));
    }

    #[test]
    fn port_sets_the_default_bind_on_all_interfaces() {
        let loaded = load(&[], &[("PORT", "5000")]).unwrap();
        assert_eq!(loaded.settings.bind, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(loaded.origin("bind"), &Origin::Env("PORT".into()));
    }

    #[test]
    fn port_is_ignored_when_bind_is_set_anywhere() {
        let file = TempFile::new("bind = \"127.0.0.1:7001\"\n");
        let want = |addr: &str| addr.parse::<SocketAddr>().unwrap();
        let by_flag = load(&["--bind", "127.0.0.1:7000"], &[("PORT", "5000")]).unwrap();
        assert_eq!(by_flag.settings.bind, want("127.0.0.1:7000"));
        let by_env = load(&[], &[("PORT", "5000"), ("VIGIL_BIND", "127.0.0.1:7002")]).unwrap();
        assert_eq!(by_env.settings.bind, want("127.0.0.1:7002"));
        let by_file = load(&["--config", file.arg()], &[("PORT", "5000")]).unwrap();
        assert_eq!(by_file.settings.bind, want("127.0.0.1:7001"));
        // Not even read then: a platform's PORT is not ours to reject when bind is set.
        assert!(load(&["--bind", "127.0.0.1:7000"], &[("PORT", "web")]).is_ok());
    }

    #[test]
    fn bad_port_is_an_error_naming_port() {
        for port in ["web", "65536", "-1", ""] {
            let err = load(&[], &[("PORT", port)]).unwrap_err();
            assert_eq!((err.setting(), err.origin()), (Some("bind"), Some(&Origin::Env("PORT".into()))), "{port:?}");
            assert!(err.to_string().starts_with("PORT: expected a port number"), "{err}");
        }
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let err = load(&[], &[("VIGIL_THREADS", "many")]).unwrap_err();
        assert_eq!(err.to_string(), "VIGIL_THREADS: expected a non-negative integer, got \"many\"");
        let err = load(&[], &[("VIGIL_WATCHDOG_TICK", "2s")]).unwrap_err();
        assert_eq!(err.to_string(), "VIGIL_WATCHDOG_TICK: must be between 1ms and 1s, got 2s");
        let err = load(&[], &[("VIGIL_ACCESS_LOG", "maybe")]).unwrap_err();
        assert!(err.to_string().starts_with("VIGIL_ACCESS_LOG: expected on/off"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_environment_value_names_the_variable() {
        use std::os::unix::ffi::OsStringExt;
        let env = [(OsString::from("VIGIL_TIMEOUT"), OsString::from_vec(vec![b'2', 0xff]))];
        let err = Settings::load(&[], env).unwrap_err();
        assert_eq!(err.origin(), Some(&Origin::Env("VIGIL_TIMEOUT".into())));
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn bad_file_value_names_the_file_line_and_key() {
        let file = TempFile::new("\nthreads = 0\n");
        let err = load(&["--config", file.arg()], &[]).unwrap_err();
        assert_eq!(err.origin(), Some(&file_origin(&file, 2)));
        assert_eq!(err.to_string(), format!("{}:2: threads: must be between 1 and 4096, got 0", file.arg()));
    }

    #[test]
    fn file_value_of_the_wrong_type_names_the_key() {
        for (text, words) in [
            ("threads = [1, 2]", "got array"),
            ("threads = { n = 1 }", "got table"),
            ("timeout = 1979-05-27", "got datetime"),
            ("bind = 8080", "expected host:port"),
            ("timeout = -1.5", "invalid duration"),
            ("threads = 8.0", "expected a non-negative integer, got \"8.0\""),
        ] {
            let file = TempFile::new(text);
            let err = load(&["--config", file.arg()], &[]).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{}:1: ", file.arg())), "{text}: {err}");
            assert!(err.to_string().contains(words), "{text}: {err}");
        }
    }

    #[test]
    fn bad_value_is_an_error_even_where_a_higher_layer_overrides_it() {
        let file = TempFile::new("threads = 0\n");
        let err = load(&["--config", file.arg(), "--threads", "4"], &[]).unwrap_err();
        assert_eq!(err.origin(), Some(&file_origin(&file, 1)));
        let err = load(&["--threads", "4"], &[("VIGIL_THREADS", "none")]).unwrap_err();
        assert_eq!(err.origin(), Some(&Origin::Env("VIGIL_THREADS".into())));
    }

    #[test]
    fn settings_in_conflict_name_where_the_faulty_one_came_from() {
        let file = TempFile::new("admin_bind = \"127.0.0.1:7100\"\n");
        let err = load(&["--config", file.arg()], &[("VIGIL_BIND", "127.0.0.1:7100")]).unwrap_err();
        assert_eq!(err.setting(), Some("admin_bind"));
        assert_eq!(
            err.to_string(),
            format!("{}:1: admin_bind: must differ from bind, both are 127.0.0.1:7100", file.arg())
        );
    }

    #[test]
    fn unknown_file_keys_are_errors_naming_each_with_a_suggestion() {
        let file = TempFile::new("threads = 2\nthraeds = 2\n[server]\nport = 1\nmaxbody = 1\n");
        let err = load(&["--config", file.arg()], &[]).unwrap_err();
        let SettingsError::UnknownKeys { keys, .. } = &err else { panic!("{err:?}") };
        assert_eq!(keys, &[("thraeds".to_string(), 2, Some("threads")), ("server".to_string(), 3, None)]);
        assert!(err.to_string().contains(":2: thraeds: no such setting (did you mean threads?)"), "{err}");
        // A dashed key is a typo too.
        let file = TempFile::new("max-body = \"1m\"\n");
        let err = load(&["--config", file.arg()], &[]).unwrap_err();
        assert!(err.to_string().ends_with(":1: max-body: no such setting (did you mean max_body?)"), "{err}");
    }

    #[test]
    fn unknown_vigil_variables_are_errors_naming_each_with_a_suggestion() {
        let env =
            [("VIGIL_THRAEDS", "2"), ("VIGIL_FOO", "1"), ("VIGIL_CONFG", "x"), ("HOME", "/root"), ("PATH", "/bin")];
        let err = load(&[], &env).unwrap_err();
        assert_eq!(
            err,
            SettingsError::UnknownEnv(vec![
                ("VIGIL_CONFG".into(), Some("VIGIL_CONFIG".into())),
                ("VIGIL_FOO".into(), None),
                ("VIGIL_THRAEDS".into(), Some("VIGIL_THREADS".into())),
            ])
        );
        assert!(err.to_string().contains("VIGIL_THRAEDS: no such setting (did you mean VIGIL_THREADS?)"), "{err}");
        // Only the exact spelling is a setting's variable.
        assert!(load(&[], &[("VIGIL_threads", "2")]).is_err());
    }

    #[test]
    fn unreadable_or_malformed_file_is_an_error_naming_it() {
        let missing = std::env::temp_dir().join(format!("vigil-no-such-{}.toml", std::process::id()));
        let err = load(&["--config", missing.to_str().unwrap()], &[]).unwrap_err();
        assert!(matches!(&err, SettingsError::File { path, .. } if *path == missing), "{err:?}");
        let file = TempFile::new("threads = 2\nthreads = 3\n");
        let err = load(&["--config", file.arg()], &[]).unwrap_err();
        assert!(matches!(err, SettingsError::File { .. }), "{err:?}");
        assert!(err.to_string().contains("line 2"), "{err}");
        let file = TempFile::new("max_body = 1m\n");
        let err = load(&["--config", file.arg()], &[]).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("config file {}: TOML parse error at line 1", file.arg())),
            "{err}"
        );
    }

    #[test]
    fn print_config_output_is_a_config_file_that_loads_back_the_same_settings() {
        let file = TempFile::new("max_body = \"1m\"\nlimit_request_head = 1024\n");
        let env = [("VIGIL_ACCESS_LOG", "on"), ("VIGIL_BACKLOG", "77"), ("PORT", "5000")];
        let loaded =
            load(&["--config", file.arg(), "--threads", "3", "--timeout", "1.5", "--admin-bind", "off"], &env).unwrap();
        let toml = loaded.to_toml();
        for line in [
            "bind = \"0.0.0.0:5000\"",
            "threads = 3",
            "timeout = \"1500ms\"",
            "admin_bind = \"off\"",
            "access_log = true",
            "backlog = 77",
            "max_body = \"1MiB\"",
        ] {
            assert!(toml.lines().any(|l| l.starts_with(line)), "{line} missing:\n{toml}");
        }
        let origin_of = |key: &str| toml.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap().to_string();
        assert!(origin_of("bind").ends_with("# PORT"), "{toml}");
        assert!(origin_of("threads").ends_with("# --threads"), "{toml}");
        assert!(origin_of("access_log").ends_with("# VIGIL_ACCESS_LOG"), "{toml}");
        assert!(origin_of("max_body").ends_with(&format!("# {}:1", file.arg())), "{toml}");
        assert!(origin_of("max_abandoned").ends_with("# default (auto: 3)"), "{toml}");
        let again = TempFile::new(&toml);
        let reloaded = load(&["--config", again.arg()], &[]).unwrap();
        assert_eq!(format!("{:?}", reloaded.settings), format!("{:?}", loaded.settings));
    }

    #[test]
    fn print_and_check_config_are_modes() {
        assert_eq!(load(&[], &[]).unwrap().mode, Mode::Serve);
        assert_eq!(load(&["--print-config"], &[]).unwrap().mode, Mode::PrintConfig);
        assert_eq!(load(&["--check-config"], &[]).unwrap().mode, Mode::CheckConfig);
        assert_eq!(load(&["--check-config", "--print-config"], &[]).unwrap().mode, Mode::PrintConfig);
        // Invalid settings are an error whatever the mode.
        assert!(load(&["--print-config", "--threads", "0"], &[]).is_err());
    }

    #[test]
    fn summary_counts_where_settings_came_from() {
        let file = TempFile::new("threads = 2\nmax_body = 5\n");
        let loaded = load(&["--config", file.arg(), "--timeout", "3"], &[("VIGIL_KEEPALIVE", "1")]).unwrap();
        let want = format!(
            "{} settings: 1 from flags, 1 from the environment, 2 from {}, {} defaults",
            FIELDS.len(),
            file.arg(),
            FIELDS.len() - 4
        );
        assert_eq!(loaded.summary(), want);
    }

    #[test]
    fn typos_are_recognised_and_unrelated_names_are_not() {
        assert_eq!(closest("thraeds"), Some("threads"));
        assert_eq!(closest("max-body"), Some("max_body"));
        assert_eq!(closest("keep_alive"), Some("keepalive"));
        assert_eq!(closest("server"), None);
        assert_eq!(closest("port"), None);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
