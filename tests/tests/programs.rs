//! The list of programs the project executes (xtask/src/programs.rs) is complete and right:
//! nothing starts a program except through it, every program named in the code is on it, setup
//! installed each listed program from the package the list names, and the README shows the list.
use std::path::{Path, PathBuf};

use lvs_xdp_tests::{
    netns,
    programs::{self, PROGRAMS, Source},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file of the workspace (not target/), with its path relative to the root.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let root = workspace();
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(files.len() > 20, "found only {} sources", files.len());
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The one file allowed to start a program directly.
const LIST: &str = "xtask/src/programs.rs";

#[test]
fn only_the_program_list_starts_programs() {
    // Spelled in pieces so that this file does not match itself.
    let starts = [
        concat!("Command", "::new("),
        concat!("exec", "vp("),
        concat!("posix", "_spawn"),
        concat!("libc::", "system("),
    ];
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path == LIST {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if starts.iter().any(|s| line.contains(s)) {
                found.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "programs started without the list ({LIST}); use programs::command / netns::program / \
         Netns::command:\n{}",
        found.join("\n")
    );
}

/// The string literals passed first to the calls that run a program by name.
fn named_programs(text: &str) -> Vec<(usize, String)> {
    let calls = [
        ".exec(",
        ".exec_on_cpu(",
        ".stdout(",
        ".command(",
        "program(",
    ];
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for call in calls {
            let mut rest = line;
            while let Some(i) = rest.find(call) {
                rest = &rest[i + call.len()..];
                // exec_on_cpu(CPU, "name", ...): skip a leading number argument.
                let arg =
                    rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ',' || c == ' ');
                if let Some(lit) = arg.strip_prefix('"')
                    && let Some(end) = lit.find('"')
                {
                    out.push((n + 1, lit[..end].to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn every_program_named_in_the_code_is_listed() {
    let mut unlisted = Vec::new();
    let mut seen = 0;
    for (path, text) in sources() {
        for (line, name) in named_programs(&text) {
            seen += 1;
            if programs::lookup(&name).is_err() {
                unlisted.push(format!("{path}:{line}: `{name}`"));
            }
        }
    }
    // The scan finds the calls it is meant to find (nginx, nft, curl, ip, ...).
    assert!(
        seen >= 10,
        "only {seen} program names found: the scan is broken"
    );
    assert!(
        unlisted.is_empty(),
        "programs run but not in {LIST} (add each with its Debian package):\n{}",
        unlisted.join("\n")
    );
}

#[test]
fn the_scan_sees_each_way_of_naming_a_program() {
    let text = r#"ns.exec("nft", &[]); ns.exec_on_cpu(0, "curl", &[]); ns.stdout("ss", &[]);
        ns.command("nginx"); netns::program("chmod"); cmd.stdout(Stdio::null());"#;
    let names: Vec<String> = named_programs(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["nft", "curl", "ss", "nginx", "chmod"]);
}

#[test]
fn an_unlisted_program_is_refused_by_name() {
    let name = ["frobnicate", "net"].join("-");
    let err = netns::program(&name).unwrap_err().to_string();
    assert!(
        err.contains(&format!("`{name}`")) && err.contains(LIST),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_missing_program_is_one_line_naming_its_package() {
    // curl lives in /usr/bin: with a PATH that lacks it, it is "not installed".
    let err = programs::resolve_in("curl", std::ffi::OsStr::new("/nonexistent")).unwrap_err();
    assert_eq!(
        err,
        "`curl` is not installed (Debian package curl; `cargo xtask setup` installs it)"
    );
    // sysctl is in /usr/sbin, which resolve adds for shells whose PATH lacks it.
    let found = programs::resolve_in("sysctl", std::ffi::OsStr::new("/nonexistent"));
    assert!(found.is_ok_and(|p| p.is_absolute()));
}

#[test]
fn setup_installed_every_listed_program_from_its_package() {
    let mut wrong = Vec::new();
    for p in PROGRAMS {
        if let Source::DebianFile(..) = p.source {
            // Extracted, not installed: it is there and runs.
            let runs = programs::command(p.name).map(|mut cmd| {
                cmd.arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            match runs {
                Ok(true) => {}
                Ok(false) => wrong.push(format!("`{}` does not run", p.name)),
                Err(e) => wrong.push(e),
            }
            continue;
        }
        let Source::Debian(package) = p.source else {
            continue;
        };
        if let Err(e) = programs::resolve(p.name) {
            wrong.push(e);
            continue;
        }
        let files = netns::run(netns::program("dpkg-query").unwrap().args(["-L", package]))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ships = files.lines().any(|f| {
            f.ends_with(&format!("/bin/{}", p.name)) || f.ends_with(&format!("/sbin/{}", p.name))
        });
        if !ships {
            wrong.push(format!(
                "`{}` is listed as Debian package {package}, which does not ship it",
                p.name
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_readme_lists_every_program_and_package() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter_map(|p| {
            let row = match p.source {
                Source::Debian(package) => format!("| `{}` | {package} |", p.name),
                Source::DebianFile(package, _) => {
                    format!("| `{}` | {package} (one file, extracted) |", p.name)
                }
                _ => return None,
            };
            (!readme.contains(&row)).then_some(row)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md lacks these rows of the program table:\n{}",
        missing.join("\n")
    );
}
