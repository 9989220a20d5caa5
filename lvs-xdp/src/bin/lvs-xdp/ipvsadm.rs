//! `lvs-xdp -A|-E|-D|-a|-e|-d|-C|-L|-S|-R|--set ...`: ipvsadm's words, sent to the running
//! director. Exit codes as ipvsadm's: 0 done, 2 a malformed command line, 1 a listing that
//! failed, 255 a change the running director refused; always one line on standard error.
use std::{io::Read as _, process::ExitCode};

use lvs_xdp::{
    control::{self, Reply, Request},
    ipvsadm::{
        parse::{self, Command, ListWhat, Usage},
        render,
    },
};

const USAGE: &str = "Usage:
  lvs-xdp -A|E virtual-service [-s scheduler]
  lvs-xdp -D virtual-service
  lvs-xdp -C
  lvs-xdp -R
  lvs-xdp -S [-n]
  lvs-xdp -a|e virtual-service -r server-address [-g] [-w weight] [--mac MAC]
  lvs-xdp -d virtual-service -r server-address
  lvs-xdp -L|l [virtual-service] [options]
  lvs-xdp -Z [virtual-service]
  lvs-xdp --set tcp tcpfin udp
  lvs-xdp -h

virtual-service: --tcp-service|-t service-address | --udp-service|-u service-address
  (service-address is host[:port])

Options as ipvsadm's, plus:
  --iface IFACE   the lvs-xdp run instance serving IFACE (when several run)
  --json          the listing as JSON
  --mac MAC       a real server's MAC, instead of the neighbour table's

The daemon and the offline check: lvs-xdp --help.
";

fn say(code: u8, message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(code)
}

fn print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints `value` as JSON (`--json`) or as `text` renders it.
fn show<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(j) => print(&format!("{j}\n")),
            Err(e) => return say(1, &format!("cannot write JSON: {e}")),
        }
    } else {
        print(&text());
    }
    ExitCode::SUCCESS
}

pub fn main(args: &[String]) -> ExitCode {
    // No arguments at all: list, as ipvsadm does.
    let args = if args.is_empty() {
        vec!["-L".to_string()]
    } else {
        args.to_vec()
    };
    let inv = match parse::parse(&args) {
        Ok(inv) => inv,
        Err(Usage { code, message }) => return say(code, &message),
    };
    let (request, lines) = match &inv.command {
        Command::Help => {
            print(USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            print(&format!(
                "lvs-xdp {} (the words of ipvsadm v1.31)\n",
                env!("CARGO_PKG_VERSION")
            ));
            return ExitCode::SUCCESS;
        }
        Command::Apply(op) => (Request::Apply(vec![op.clone()]), Vec::new()),
        Command::Restore => {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                return say(
                    2,
                    &format!("cannot read the rules from standard input: {e}"),
                );
            }
            match parse::restore_ops(&text) {
                Ok(ops) => {
                    let (lines, ops): (Vec<usize>, Vec<_>) = ops.into_iter().unzip();
                    (Request::Apply(ops), lines)
                }
                Err(Usage { code, message }) => return say(code, &message),
            }
        }
        // No connection-sync daemon runs: nothing to list, as ipvsadm prints none.
        Command::List(ListWhat::Daemons, _) => return ExitCode::SUCCESS,
        Command::Zero(key) => (Request::Zero(*key), Vec::new()),
        Command::List(ListWhat::Connections, _) => (Request::Connections, Vec::new()),
        Command::List(..) => (Request::List, Vec::new()),
        Command::Save(_) => (Request::Save, Vec::new()),
    };
    let reply = match control::find(inv.iface.as_deref()).and_then(|p| control::call(&p, &request))
    {
        Ok(reply) => reply,
        Err(e) => return say(2, &format!("{e:#}")),
    };
    match (reply, &inv.command) {
        (Reply::Done, _) => ExitCode::SUCCESS,
        (Reply::Refused { op, message }, _) => match lines.get(op) {
            Some(line) => say(255, &format!("line {line}: {message}")),
            None => say(255, &message),
        },
        (Reply::Failed(message), _) => say(255, &message),
        (Reply::Listing(listing), Command::List(ListWhat::Services(None), f)) => {
            show(f.json, &listing, || render::list_all(&listing, *f))
        }
        (Reply::Listing(listing), Command::List(ListWhat::Services(Some(key)), f)) => {
            let Some(svc) = listing.services.iter().find(|s| s.key() == *key) else {
                return say(1, "No such service");
            };
            show(f.json, svc, || render::list_one(svc, *f))
        }
        (Reply::Listing(listing), Command::List(ListWhat::Timeouts, f)) => {
            show(f.json, &listing.timeouts, || {
                render::timeouts(&listing.timeouts)
            })
        }
        (Reply::Connections(conns), Command::List(_, f)) => {
            show(f.json, &conns, || render::connections(&conns, *f))
        }
        (Reply::Saved { listing, macs }, Command::Save(f)) => {
            print(&render::save(&listing, &macs, *f));
            ExitCode::SUCCESS
        }
        _ => say(1, "unexpected reply from the director"),
    }
}
