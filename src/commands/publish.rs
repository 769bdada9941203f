//! `purge-worker publish`: publish purge events (publisher confirms on).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};

use super::{UsageError, count};
use crate::cache_key::MAX_URL_LEN;
use crate::event::{Event, Priority};
use crate::provider::{FlushType, Header, wangsu_rules};

/// Confirms awaited at once while publishing a file.
const CONFIRM_WINDOW: usize = 256;
/// Refused arguments listed one by one; the rest are counted.
const MAX_LISTED: usize = 20;
/// Characters of a refused URL or line shown in a message.
const MAX_SHOWN: usize = 100;

/// Publish one purge event from the given URLs, or a file of URLs (one per line) chunked into
/// events. Each publish waits for the broker's confirm; what is printed was really enqueued.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// Config file (TOML); only [amqp] is used (the rest is not validated, and [[providers]] may be absent). Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults (local RabbitMQ and Redis).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Purge the URLs as directories (prefix purges) instead of single files.
    #[arg(long)]
    pub dir: bool,
    /// How directory purges treat cached objects: flush (only what changed) or delete (everything).
    #[arg(long, value_name = "flush|delete", default_value = "flush", value_parser = ["flush", "delete"])]
    pub flush_type: String,
    /// Read URLs from a file, one per line ("-" for standard input); blank lines are skipped.
    #[arg(long, value_name = "PATH|-", conflicts_with = "urls")]
    pub file: Option<String>,
    /// The events' class: interactive (an editor waits; the default for URLs on the command line)
    /// or bulk (a job; the default with --file). Bulk events go to amqp.bulk_queue, interactive
    /// ones to amqp.queue.
    #[arg(long, value_name = "interactive|bulk", value_parser = ["interactive", "bulk"])]
    pub priority: Option<String>,
    /// URLs per event when reading --file.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub chunk_size: u32,
    /// Event id, carried into the worker's logs and dead-letter records.
    #[arg(long)]
    pub id: Option<String>,
    /// Event source, carried into the worker's logs and dead-letter records.
    #[arg(long, default_value = "purge-worker-cli")]
    pub source: String,
    /// A cache-key regex to purge, `{http|https|any}://{host}/...` (wangsu hosts only); repeatable.
    #[arg(long = "regex", value_name = "PATTERN", conflicts_with = "file")]
    pub regex: Vec<String>,
    /// A request header the URLs are cached under, `NAME:VALUE` (wangsu hosts only); repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<Header>,
    /// URLs to purge (absolute http:// or https://).
    #[arg(value_name = "URL", required_unless_present_any = ["file", "regex"])]
    pub urls: Vec<String>,
}

/// `NAME:VALUE` → a header, checked like the worker checks event headers.
fn parse_header(s: &str) -> Result<Header, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not NAME:VALUE"))?;
    let (name, value) = (name.trim(), value.trim());
    wangsu_rules::check_header(name, value)?;
    Ok(Header {
        name: name.to_ascii_lowercase(),
        value: value.to_string(),
    })
}

/// At most [`MAX_SHOWN`] characters of `s`, cut at a character boundary.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// Every URL and `--regex` argument the worker would refuse, all in one error so one correction
/// fixes the command line.
fn check_args(urls: &[String], regex: &[String]) -> Result<(), UsageError> {
    let refused: Vec<String> = urls
        .iter()
        .filter_map(|u| {
            check_url(u)
                .err()
                .map(|r| format!("URL `{}`: {r}", shorten(u)))
        })
        .chain(regex.iter().filter_map(|r| {
            wangsu_rules::check_regex(r)
                .err()
                .map(|reason| format!("--regex `{}`: {reason}", shorten(r)))
        }))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let mut message = format!(
        "{} of {} refused, nothing was published:",
        refused.len(),
        count((urls.len() + regex.len()) as u64, "argument", "arguments")
    );
    for r in refused.iter().take(MAX_LISTED) {
        message.push_str("\n  ");
        message.push_str(r);
    }
    if refused.len() > MAX_LISTED {
        message.push_str(&format!("\n  and {} more", refused.len() - MAX_LISTED));
    }
    Err(UsageError(message))
}

/// Looks like something the worker accepts (the worker still validates and routes it).
fn check_url(u: &str) -> Result<(), String> {
    if u.len() > MAX_URL_LEN {
        return Err(format!(
            "{} bytes long; the limit is {MAX_URL_LEN}",
            u.len()
        ));
    }
    match url::Url::parse(u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(()),
        Ok(p) => Err(format!("scheme `{}` is not http or https", p.scheme())),
        Err(e) => Err(format!("not an absolute URL ({e})")),
    }
}

/// `1 url`, `3 dirs`.
fn items(n: usize, dir: bool) -> String {
    if dir {
        count(n as u64, "dir", "dirs")
    } else {
        count(n as u64, "url", "urls")
    }
}

struct Sink {
    channel: lapin::Channel,
    queue: String,
    pending: Vec<lapin::PublisherConfirm>,
}

impl Sink {
    async fn send(&mut self, event: &Event) -> anyhow::Result<()> {
        let body = serde_json::to_vec(event)?;
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await?;
        self.pending.push(confirm);
        if self.pending.len() >= CONFIRM_WINDOW {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        for c in self.pending.drain(..) {
            match c.await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => anyhow::bail!(
                    "queue `{}` does not exist: the message was returned",
                    self.queue
                ),
                Confirmation::Nack(_) => anyhow::bail!("RabbitMQ refused (nacked) a message"),
            }
        }
        Ok(())
    }
}

/// Runs the command.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let amqp = super::load_amqp(args.config.as_deref())?;
    check_args(&args.urls, &args.regex)?;
    // The worker's order (sorted by lower-case name), so equal sets form one lane; a name given
    // twice would get the whole event dead-lettered, so it is refused here.
    let mut headers = args.headers.clone();
    headers.sort();
    if let Some(w) = headers.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(UsageError(format!("--header `{}` is given twice", w[0].name)).into());
    }
    let priority = match args.priority.as_deref() {
        Some(p) => Priority::parse(p).unwrap_or_default(),
        None if args.file.is_some() => Priority::Bulk,
        None => Priority::Interactive,
    };
    let queue = match priority {
        Priority::Interactive => amqp.queue.clone(),
        Priority::Bulk => amqp.bulk_queue.clone(),
    };
    let conn = crate::amqp::connect(amqp.url.expose(), "purge-worker publish").await?;
    crate::amqp::ensure_queue(&conn, &queue).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut sink = Sink {
        channel,
        queue: queue.clone(),
        pending: Vec::new(),
    };
    let flush_type = args.flush_type.parse::<FlushType>().unwrap_or_default();
    let make = |items: Vec<String>, n: usize| Event {
        urls: if args.dir { Vec::new() } else { items.clone() },
        dirs: if args.dir { items } else { Vec::new() },
        flush_type,
        id: match (&args.id, n) {
            (Some(id), 0) if args.file.is_none() => Some(id.clone()),
            (Some(id), n) => Some(format!("{id}-{n}")),
            (None, _) => None,
        },
        source: Some(args.source.clone()),
        regex: if n == 0 {
            args.regex.clone()
        } else {
            Vec::new()
        },
        headers: headers.clone(),
        priority,
    };

    let Some(file) = &args.file else {
        let event = make(args.urls.clone(), 0);
        sink.send(&event).await?;
        sink.flush().await?;
        out!("{}", serde_json::to_string(&event)?);
        out!(
            "published 1 event ({}) to queue `{}`",
            items(args.urls.len(), args.dir),
            queue
        );
        let _ = conn.close(200, "done".into()).await;
        return Ok(());
    };

    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("cannot open --file {file}"))?,
        ))
    };
    let total = std::fs::metadata(file)
        .ok()
        .filter(|_| file != "-")
        .map(|m| m.len());
    let bar = if std::io::stderr().is_terminal() {
        let b = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let (mut chunk, mut events, mut urls, mut suspicious) = (Vec::new(), 0usize, 0usize, 0usize);
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {} of {file}", n + 1))?;
        if let Some(b) = &bar {
            b.inc(line.len() as u64 + 1);
        }
        let u = line.trim();
        if u.is_empty() {
            continue;
        }
        if let Err(r) = check_url(u) {
            suspicious += 1;
            eprintln!(
                "warning: line {}: `{}`: {r}; published anyway, the worker will dead-letter it",
                n + 1,
                shorten(u)
            );
        }
        chunk.push(u.to_string());
        urls += 1;
        if chunk.len() >= args.chunk_size as usize {
            sink.send(&make(std::mem::take(&mut chunk), events)).await?;
            events += 1;
            if let Some(b) = &bar {
                b.set_message(format!(
                    "{} in {}",
                    items(urls, args.dir),
                    count(events as u64, "event", "events")
                ));
            }
        }
    }
    if !chunk.is_empty() {
        sink.send(&make(chunk, events)).await?;
        events += 1;
    }
    sink.flush().await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out!(
        "published {} ({}) to queue `{}`",
        count(events as u64, "event", "events"),
        items(urls, args.dir),
        queue
    );
    if suspicious > 0 {
        eprintln!(
            "{} not look like http(s) URLs (see warnings above)",
            count(suspicious as u64, "line did", "lines did")
        );
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
