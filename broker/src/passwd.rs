//! `tern-broker passwd`: maintains a users file from the command line, like `mosquitto_passwd`.
//! The password is prompted for on the terminal, or read from standard input when that is not a
//! terminal (a pipe, a script) or `--password-stdin` says so.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use tern_broker::auth::{hash_new, users};

pub fn run(file: &Path, username: &str, delete: bool, password_stdin: bool) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !delete => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let updated = if delete {
        users::remove_user(&current, username)?
    } else {
        let password = read_password(password_stdin)?;
        let hash = hash_new(password.as_bytes())?;
        users::set_password(&current, username, &hash)?
    };
    write_atomically(file, &updated)?;
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    // The prompt reads the controlling terminal, not standard input: with a pipe in front it would
    // ignore the piped password, and without a terminal (a script, a container) it cannot open one.
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            bail!("empty password on standard input");
        }
        return Ok(password);
    }
    let first =
        rpassword::prompt_password("Password: ").context("cannot prompt for the password")?;
    let second = rpassword::prompt_password("Reenter password: ")
        .context("cannot prompt for the password")?;
    if first != second {
        bail!("passwords do not match");
    }
    if first.is_empty() {
        bail!("empty password");
    }
    Ok(first)
}

/// Writes next to the file and renames over it, so a broker reloading the file never reads half of it.
fn write_atomically(file: &Path, text: &str) -> anyhow::Result<()> {
    let directory = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(directory)
        .with_context(|| format!("cannot write in {}", directory.display()))?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}
