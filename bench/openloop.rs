//! Open-loop load generator for `POST /predict`: requests go out on a fixed arrival schedule
//! (Poisson or constant rate, seeded), whatever the server answers, over a pool of keep-alive
//! connections opened before the schedule starts. A closed-loop client (wrk) sends its next request
//! only when an answer came back, so an overloaded or refusing server slows the client down with
//! it and the client measures itself; here the offered rate does not depend on the server.
//!
//!   cargo bench -p celestial-server --bench openloop -- --rate 28000 [--duration 20] [--server-pid PID]
//!
//! - Latency counts from each request's *scheduled* time, not from when it was written, so a send
//!   the scheduler thread dispatched late is charged to the answer, never hidden (no coordinated
//!   omission).
//! - In flight at most `--connections` requests (one per connection, HTTP/1.1 without
//!   pipelining). A send that finds every connection busy is not sent and counted as dropped by
//!   the client: waiting for a free connection would make the schedule depend on the server again.
//! - No request is retried; an answer is 2xx (served), 429 (refused; with or without Retry-After),
//!   another status, a connection error (no answer; the connection is reopened for the next
//!   send), or none before the drain deadline.
//! - The body is what `bench/multipart.lua` sends (the JPEG `$BENCH_IMAGE` as the part `image`).
//! - CPU time of the generator itself (getrusage) and, with `--server-pid`, of the server
//!   (utime + stime from /proc, as `bench/cpu_budget.sh` reads it), over the measured window.
//!
//! A human summary goes to stderr; stdout gets one JSON object (`--json FILE` appends it there
//! too) for scripts (`bench/overload.sh`).

#[path = "openloop_report.rs"]
mod report;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use report::{results, summary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

#[derive(Parser, Clone)]
#[command(about = "Open-loop load generator for POST /predict")]
struct Args {
    /// The server's address.
    #[arg(long, env = "OPENLOOP_ADDR", default_value = "127.0.0.1:3917")]
    addr: SocketAddr,
    /// The JPEG posted as the multipart part `image`.
    #[arg(long, env = "BENCH_IMAGE")]
    image: PathBuf,
    /// Requests per second offered.
    #[arg(long, env = "OPENLOOP_RATE")]
    rate: f64,
    /// Seconds measured, after the warm-up.
    #[arg(long, env = "OPENLOOP_DURATION", default_value_t = 20.0)]
    duration: f64,
    /// Seconds of the same schedule before the measured window (sent, not counted).
    #[arg(long, env = "OPENLOOP_WARMUP", default_value_t = 2.0)]
    warmup: f64,
    /// Keep-alive connections opened before the schedule starts: the cap on requests in flight.
    #[arg(long, env = "OPENLOOP_CONNECTIONS", default_value_t = 1024)]
    connections: usize,
    /// Gaps between sends: exponential (a Poisson process) or all equal.
    #[arg(long, env = "OPENLOOP_ARRIVALS", value_enum, default_value = "poisson")]
    arrivals: Arrivals,
    /// Seed of the Poisson gaps.
    #[arg(long, env = "OPENLOOP_SEED", default_value_t = 1)]
    seed: u64,
    /// Threads of the runtime that drives the connections (the scheduler has its own).
    #[arg(long, env = "OPENLOOP_THREADS", default_value_t = 1)]
    threads: usize,
    /// Seconds after the last scheduled send that answers are still waited for.
    #[arg(long, env = "OPENLOOP_DRAIN", default_value_t = 10.0)]
    drain: f64,
    /// The server's process id: its CPU time over the measured window is reported too.
    #[arg(long, env = "OPENLOOP_SERVER_PID")]
    server_pid: Option<u32>,
    /// Append the JSON results (one line) to this file as well.
    #[arg(long, env = "OPENLOOP_JSON")]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Arrivals {
    Poisson,
    Constant,
}

/// splitmix64: a small seeded generator (the schedule needs no other randomness).
struct Rng(u64);

impl Rng {
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON
    }
}

/// One scheduled request.
#[derive(Clone, Copy)]
struct Job {
    at: Instant,
    /// Scheduled inside the measured window (else warm-up).
    measured: bool,
}

/// What one connection saw of the measured requests.
#[derive(Default)]
struct Tally {
    /// Latencies (us from the scheduled time) of 2xx answers, and of 429s.
    ok: Vec<u32>,
    refused: Vec<u32>,
    refused_without_retry_after: u64,
    other: BTreeMap<u16, u64>,
    /// Requests that got no answer: the connection failed (it is reopened for the next one).
    errors: u64,
    /// No answer before the drain deadline.
    unanswered: u64,
    reconnects: u64,
}

impl Tally {
    fn merge(&mut self, t: Tally) {
        self.ok.extend(t.ok);
        self.refused.extend(t.refused);
        self.refused_without_retry_after += t.refused_without_retry_after;
        for (status, n) in t.other {
            *self.other.entry(status).or_default() += n;
        }
        self.errors += t.errors;
        self.unanswered += t.unanswered;
        self.reconnects += t.reconnects;
    }
}

/// The parts of an answer that are counted.
struct Answer {
    status: u16,
    retry_after: bool,
    close: bool,
}

/// The request, byte for byte what `bench/multipart.lua` makes wrk send (same boundary, part name,
/// file name and type), so that wrk's peak and this generator's loads are the same requests.
fn request_bytes(args: &Args) -> Vec<u8> {
    let image = std::fs::read(&args.image)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", args.image.display()));
    let boundary = "----celestialbench7d1f0c";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"image.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&image);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut request = format!(
        "POST /predict HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        args.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Write the request, read one answer (its head and a `Content-Length` body).
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> io::Result<Answer> {
    stream.write_all(request).await?;
    buf.clear();
    let (head, length, answer) = loop {
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(buf).map_err(invalid)? {
            let mut answer = Answer {
                status: response.code.unwrap_or(0),
                retry_after: false,
                close: false,
            };
            let mut length = None;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.parse().ok());
                } else if h.name.eq_ignore_ascii_case("retry-after") {
                    answer.retry_after = true;
                } else if h.name.eq_ignore_ascii_case("connection") {
                    answer.close = h.value.eq_ignore_ascii_case(b"close");
                }
            }
            // The server frames every answer with Content-Length; anything else is an error here.
            let length: usize = length.ok_or_else(|| invalid("answer without Content-Length"))?;
            break (head, length, answer);
        }
    };
    while buf.len() < head + length {
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(answer)
}

/// Connections waiting for a job (the scheduler pops one per send).
type Idle = Mutex<Vec<usize>>;

/// One keep-alive connection: jobs one after the other until the schedule is over or the drain
/// deadline has passed.
async fn connection(
    id: usize,
    addr: SocketAddr,
    mut stream: Option<TcpStream>,
    request: Arc<[u8]>,
    idle: Arc<Idle>,
    mut rx: UnboundedReceiver<Job>,
    deadline: tokio::time::Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        idle.lock().unwrap().push(id);
        let Some(job) = rx.recv().await else { break };
        let answered = tokio::time::timeout_at(deadline, async {
            if stream.is_none() {
                stream = Some(connect(addr).await?);
                tally.reconnects += 1;
            }
            exchange(stream.as_mut().unwrap(), &request, &mut buf).await
        })
        .await;
        let micros = u32::try_from(job.at.elapsed().as_micros()).unwrap_or(u32::MAX);
        let answer = match answered {
            Err(_) => {
                tally.unanswered += u64::from(job.measured);
                break;
            }
            Ok(Err(_)) => {
                stream = None;
                tally.errors += u64::from(job.measured);
                continue;
            }
            Ok(Ok(answer)) => answer,
        };
        if answer.close {
            stream = None;
        }
        if !job.measured {
            continue;
        }
        match answer.status {
            200..=299 => tally.ok.push(micros),
            429 => {
                tally.refused.push(micros);
                tally.refused_without_retry_after += u64::from(!answer.retry_after);
            }
            other => *tally.other.entry(other).or_default() += 1,
        }
    }
    tally
}

/// What the scheduler saw: sends per phase, the ones dropped for want of a free connection, and
/// how far behind their time it dispatched them.
#[derive(Default)]
struct Dispatched {
    /// Measured sends scheduled (sent or dropped), and warm-up ones.
    measured: u64,
    warmup: u64,
    /// Measured sends that found every connection busy.
    dropped: u64,
    lag_sum: Duration,
    lag_max: Duration,
    /// Measured sends dispatched more than 1 ms after their time.
    lag_over_1ms: u64,
}

/// The schedule, on its own thread: sleep to each send's time, hand it to an idle connection or,
/// if there is none, drop it.
fn schedule(args: &Args, t0: Instant, senders: &[UnboundedSender<Job>], idle: &Idle) -> Dispatched {
    let mut rng = Rng(args.seed);
    let mut done = Dispatched::default();
    let total = args.warmup + args.duration;
    let mut offset = 0.0;
    while offset < total {
        let at = t0 + secs(offset);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let job = Job {
            at,
            measured: offset >= args.warmup,
        };
        let id = idle.lock().unwrap().pop();
        // (a connection's task ends only at the drain deadline, after the schedule)
        let sent = id.is_some_and(|id| senders[id].send(job).is_ok());
        if job.measured {
            let lag = at.elapsed();
            done.measured += 1;
            done.dropped += u64::from(!sent);
            done.lag_sum += lag;
            done.lag_max = done.lag_max.max(lag);
            done.lag_over_1ms += u64::from(lag > Duration::from_millis(1));
        } else {
            done.warmup += 1;
        }
        offset += match args.arrivals {
            Arrivals::Poisson => -rng.unit().ln() / args.rate,
            Arrivals::Constant => 1.0 / args.rate,
        };
    }
    done
}

/// utime + stime of another process in seconds (/proc/PID/stat, fields 14 and 15).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// User + system CPU seconds of this process, every thread (getrusage: microseconds, finer than
/// /proc's ticks).
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// CPU seconds of the generator and of the server (0 without a pid) over the measured window.
struct Cpu {
    generator: f64,
    server: f64,
}

async fn run(args: &Args) -> (Tally, Dispatched, Cpu) {
    let request: Arc<[u8]> = request_bytes(args).into();
    let idle = Arc::new(Idle::default());
    let t0 = Instant::now() + Duration::from_millis(200);
    let end = t0 + secs(args.warmup + args.duration);
    let deadline = tokio::time::Instant::from_std(end + secs(args.drain));
    let mut senders = Vec::with_capacity(args.connections);
    let mut tasks = Vec::with_capacity(args.connections);
    for id in 0..args.connections {
        let stream = connect(args.addr)
            .await
            .unwrap_or_else(|e| panic!("connection {id} to {}: {e}", args.addr));
        let (tx, rx) = unbounded_channel();
        senders.push(tx);
        let (request, idle) = (Arc::clone(&request), Arc::clone(&idle));
        tasks.push(tokio::spawn(connection(
            id,
            args.addr,
            Some(stream),
            request,
            idle,
            rx,
            deadline,
        )));
    }
    let scheduler = {
        let idle = Arc::clone(&idle);
        let args = args.clone();
        std::thread::spawn(move || schedule(&args, t0, &senders, &idle))
    };
    let both = || {
        let server = args.server_pid.map_or(0.0, process_cpu_seconds);
        (own_cpu_seconds(), server)
    };
    tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + secs(args.warmup))).await;
    let before = both();
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    let after = both();
    let dispatched = tokio::task::spawn_blocking(move || scheduler.join().unwrap())
        .await
        .unwrap();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.unwrap());
    }
    let cpu = Cpu {
        generator: after.0 - before.0,
        server: after.1 - before.1,
    };
    (tally, dispatched, cpu)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn main() -> io::Result<()> {
    // `cargo bench` passes --bench to a harness-less target
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let mut runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    let (tally, dispatched, cpu) = runtime.block_on(run(&args));
    let results = results(&args, tally, &dispatched, &cpu);
    eprintln!("{}", summary(&results));
    let line = results.to_string();
    println!("{line}");
    if let Some(path) = &args.json {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{line}")?;
    }
    Ok(())
}
