//! keepalived.conf's syntax: lines of words, `{ ... }` blocks, `#` and `!` comments, quoted
//! words, and `include PATTERN` (a glob, relative to the including file's directory), read
//! into a tree of [`Node`]s that remember their file and line.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// Where a statement was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A statement: its keyword, its other words, and its block's statements if it opens one.
#[derive(Clone, Debug)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Node>>,
    pub at: At,
}

/// Includes nested deeper than this are refused (a file including itself).
const MAX_DEPTH: usize = 8;

/// Reads `path` and everything it includes.
pub fn read(path: &Path) -> Result<Vec<Node>> {
    let mut lines = Vec::new();
    words_of_file(path, 0, &mut lines)?;
    tree(lines)
}

/// Reads `text` as the file `name` (includes relative to the current directory).
pub fn parse(text: &str, name: &Path) -> Result<Vec<Node>> {
    let mut lines = Vec::new();
    words_of_text(text, name, 0, &mut lines)?;
    tree(lines)
}

fn words_of_file(path: &Path, depth: usize, out: &mut Vec<(At, Vec<String>)>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    words_of_text(&text, path, depth, out)
}

fn words_of_text(
    text: &str,
    path: &Path,
    depth: usize,
    out: &mut Vec<(At, Vec<String>)>,
) -> Result<()> {
    for (i, line) in text.lines().enumerate() {
        let at = At {
            file: path.to_path_buf(),
            line: i + 1,
        };
        let words = split(line).with_context(|| at.to_string())?;
        if words.first().map(String::as_str) == Some("include") {
            if depth >= MAX_DEPTH {
                bail!("{at}: includes nested more than {MAX_DEPTH} deep");
            }
            let [_, pattern] = words.as_slice() else {
                bail!("{at}: include takes one file or pattern");
            };
            for file in expand(path, pattern).with_context(|| at.to_string())? {
                words_of_file(&file, depth + 1, out).with_context(|| at.to_string())?;
            }
            continue;
        }
        if !words.is_empty() {
            out.push((at, words));
        }
    }
    Ok(())
}

/// The words of one line: `{` and `}` are words of their own; a word starting with `#` or `!`
/// ends the line; `"..."` is one word.
fn split(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' | '!' => break,
            '{' | '}' => {
                words.push(c.to_string());
                chars.next();
            }
            '"' => {
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => w.push(c),
                        None => bail!("a quoted word is not closed"),
                    }
                }
                words.push(w);
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '{' || c == '}' {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                words.push(w);
            }
        }
    }
    Ok(words)
}

/// The files an `include` names: a path or a glob (`*`, `?` in the last component), relative
/// to the including file's directory, in name order. A pattern that matches nothing is an error.
fn expand(from: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let base = from.parent().unwrap_or(Path::new("."));
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .and_then(|n| n.to_str())
        .context("include names no file")?
        .to_string();
    if !name.contains(['*', '?']) {
        return Ok(vec![full]);
    }
    let dir = full.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob(&name, n)))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("include {pattern}: no file matches");
    }
    Ok(files)
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: any one character).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Builds the tree: a line's words up to `{` are a statement whose block follows; `}` closes
/// the innermost block; words after `{` or `}` on the same line are statements of their own.
fn tree(lines: Vec<(At, Vec<String>)>) -> Result<Vec<Node>> {
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut top = Vec::new();
    for (at, words) in lines {
        let mut current: Vec<String> = Vec::new();
        let flush =
            |words: &mut Vec<String>, stack: &mut Vec<(Node, Vec<Node>)>, top: &mut Vec<Node>| {
                if words.is_empty() {
                    return;
                }
                let node = Node {
                    keyword: words[0].clone(),
                    args: words[1..].to_vec(),
                    block: None,
                    at: at.clone(),
                };
                words.clear();
                match stack.last_mut() {
                    Some((_, children)) => children.push(node),
                    None => top.push(node),
                }
            };
        for w in words {
            match w.as_str() {
                "{" => {
                    if current.is_empty() {
                        // A block of values (`virtual_ipaddress {` on the line before): it
                        // belongs to the statement just read.
                        let last = match stack.last_mut() {
                            Some((_, children)) => children.pop(),
                            None => top.pop(),
                        };
                        let Some(node) = last else {
                            bail!("{at}: a block opens with no keyword");
                        };
                        stack.push((node, Vec::new()));
                    } else {
                        let node = Node {
                            keyword: current[0].clone(),
                            args: current[1..].to_vec(),
                            block: None,
                            at: at.clone(),
                        };
                        current.clear();
                        stack.push((node, Vec::new()));
                    }
                }
                "}" => {
                    flush(&mut current, &mut stack, &mut top);
                    let Some((mut node, children)) = stack.pop() else {
                        bail!("{at}: `}}` closes no block");
                    };
                    node.block = Some(children);
                    match stack.last_mut() {
                        Some((_, siblings)) => siblings.push(node),
                        None => top.push(node),
                    }
                }
                _ => current.push(w),
            }
        }
        flush(&mut current, &mut stack, &mut top);
    }
    if let Some((node, _)) = stack.last() {
        bail!("{}: the block of `{}` is not closed", node.at, node.keyword);
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_blocks_comments_and_quotes() {
        let text = "! Configuration File for keepalived\nglobal_defs {\n   router_id LVS_DEVEL # the id\n}\nvirtual_server 10.0.0.1 80 {\n    !persistence_timeout 50\n    real_server 10.0.0.3 80 {\n        HTTP_GET {\n            url { path \"/a b\" }\n        }\n    }\n}\n";
        let nodes = parse(text, Path::new("k.conf")).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].keyword, "global_defs");
        let g = nodes[0].block.as_ref().unwrap();
        assert_eq!(
            (g[0].keyword.as_str(), g[0].args.clone()),
            ("router_id", vec!["LVS_DEVEL".to_string()])
        );
        let vs = &nodes[1];
        assert_eq!(vs.args, ["10.0.0.1", "80"]);
        let inside = vs.block.as_ref().unwrap();
        assert_eq!(inside.len(), 1, "the commented line is gone: {inside:?}");
        let rs = &inside[0];
        assert_eq!(rs.at.line, 7);
        let url = &rs.block.as_ref().unwrap()[0].block.as_ref().unwrap()[0];
        assert_eq!(url.keyword, "url");
        let path = &url.block.as_ref().unwrap()[0];
        assert_eq!(
            (path.keyword.as_str(), path.args.clone()),
            ("path", vec!["/a b".to_string()])
        );
    }

    #[test]
    fn a_brace_on_its_own_line_opens_the_block_of_the_statement_before() {
        let nodes = parse(
            "virtual_server 10.0.0.1 80\n{\n  lb_algo rr\n}\n",
            Path::new("k"),
        )
        .unwrap();
        assert_eq!(nodes[0].block.as_ref().unwrap()[0].keyword, "lb_algo");
    }

    #[test]
    fn unbalanced_braces_are_refused_with_their_line() {
        let err = parse("a {\n b\n", Path::new("k.conf")).unwrap_err();
        assert!(
            format!("{err:#}").contains("k.conf:1: the block of `a` is not closed"),
            "{err:#}"
        );
        let err = parse("a\n}\n", Path::new("k.conf")).unwrap_err();
        assert!(
            format!("{err:#}").contains("k.conf:2: `}` closes no block"),
            "{err:#}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*.conf", "web.conf"));
        assert!(glob("vs-??.conf", "vs-01.conf"));
        assert!(!glob("*.conf", "web.conf.bak"));
        assert!(glob("*", ""));
    }

    #[test]
    fn includes_follow_globs_in_name_order() {
        let dir = std::env::temp_dir().join(format!("lvs-xdp-inc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "second 2\n").unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "first 1\n").unwrap();
        std::fs::write(dir.join("main.conf"), "include conf.d/*.conf\nlast 3\n").unwrap();
        let nodes = read(&dir.join("main.conf")).unwrap();
        let words: Vec<&str> = nodes.iter().map(|n| n.keyword.as_str()).collect();
        assert_eq!(words, ["first", "second", "last"]);
        assert!(nodes[0].at.file.ends_with("conf.d/a.conf"));
        std::fs::write(dir.join("main.conf"), "include nothing/*.conf\n").unwrap();
        assert!(read(&dir.join("main.conf")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
