//! The job queue between the HTTP side and the workers, and adaptive batching: which queued jobs
//! one ONNX Runtime call takes (`--max-batch-size`, `--max-batch-delay`).

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::error::InferenceError;
use crate::classifier::{Input, JobOutput};

/// Adaptive batching (`--max-batch-size`, `--max-batch-delay`): how many queued images one ONNX
/// Runtime call may take, and how long a worker waits for more before running a partial batch.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_images: usize,
    pub max_delay: Duration,
}

impl Batching {
    /// Every job alone: one ONNX Runtime call per request.
    pub const OFF: Batching = Batching {
        max_images: 1,
        max_delay: Duration::ZERO,
    };
}

/// Where a job's answer goes.
pub(super) type Reply = oneshot::Sender<Result<JobOutput, InferenceError>>;

/// One request's pictures waiting for a worker, and where its answer goes.
pub(super) struct Job {
    pub(super) images: Vec<Input>,
    pub(super) reply: Reply,
    pub(super) enqueued: Instant,
}

impl Job {
    /// A job of `images` queued now, and the receiver of its answer (dropping it tells the workers
    /// that the client is gone).
    pub(super) fn new(
        images: Vec<Input>,
    ) -> (Job, oneshot::Receiver<Result<JobOutput, InferenceError>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            images,
            reply,
            enqueued: Instant::now(),
        };
        (job, answer)
    }
}

/// The next jobs to run in one ONNX Runtime call: the carried job or the first one queued (waiting
/// for it), then those queued behind it while their images fit `batching.max_images` (waiting up to
/// `batching.max_delay` for more). Jobs whose client is gone are dropped unrun. `None` once the
/// engine is gone and nothing is left.
pub(super) fn next_batch(
    rx: &Mutex<mpsc::Receiver<Job>>,
    carried: &mut Option<Job>,
    batching: Batching,
) -> Option<Vec<Job>> {
    let Ok(queue) = rx.lock() else {
        return carried.take().map(|j| vec![j]);
    };
    let first = match carried.take() {
        Some(job) => job,
        None => loop {
            match queue.recv() {
                Ok(job) if job.reply.is_closed() => continue, // the client gave up: skip the work
                Ok(job) => break job,
                Err(_) => return None,
            }
        },
    };
    let mut images = first.images.len();
    let mut jobs = vec![first];
    let deadline = Instant::now() + batching.max_delay;
    while images < batching.max_images {
        let next = match queue.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match queue.recv_timeout(deadline - now) {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
        };
        if next.reply.is_closed() {
            continue;
        }
        if images + next.images.len() > batching.max_images {
            *carried = Some(next);
            break;
        }
        images += next.images.len();
        jobs.push(next);
    }
    Some(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of `n` images; the receiver keeps its reply open (drop it to close it).
    fn job(n: usize) -> (Job, oneshot::Receiver<Result<JobOutput, InferenceError>>) {
        Job::new(vec![Input::Encoded(bytes::Bytes::from_static(b"x")); n])
    }

    fn sizes(jobs: &[Job]) -> Vec<usize> {
        jobs.iter().map(|j| j.images.len()).collect()
    }

    #[test]
    fn a_batch_takes_the_queued_jobs_that_fit_and_carries_the_next() {
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(rx);
        let mut open = Vec::new();
        for n in [3, 4, 2, 5] {
            let (j, r) = job(n);
            tx.send(j).unwrap();
            open.push(r);
        }
        let (gone, r) = job(1);
        drop(r); // its client gave up: never run
        tx.send(gone).unwrap();
        let eight = Batching {
            max_images: 8,
            max_delay: Duration::ZERO,
        };
        let mut carried = None;
        let batch = next_batch(&rx, &mut carried, eight).unwrap();
        // 3 + 4 + 2 would be 9 > 8: the 2 waits for the next batch, it is not split
        assert_eq!(sizes(&batch), [3, 4]);
        let batch = next_batch(&rx, &mut carried, eight).unwrap();
        assert_eq!(sizes(&batch), [2, 5]);
        assert!(carried.is_none());
        // a job larger than the limit runs alone, whole
        let (big, _r) = job(20);
        tx.send(big).unwrap();
        assert_eq!(sizes(&next_batch(&rx, &mut carried, eight).unwrap()), [20]);
        // batching off: one job per call
        for n in [1, 1] {
            let (j, r) = job(n);
            tx.send(j).unwrap();
            open.push(r);
        }
        assert_eq!(
            sizes(&next_batch(&rx, &mut carried, Batching::OFF).unwrap()),
            [1]
        );
        assert!(
            carried.is_none(),
            "the next job stays queued for any worker"
        );
        assert_eq!(
            sizes(&next_batch(&rx, &mut carried, Batching::OFF).unwrap()),
            [1]
        );
    }

    #[test]
    fn a_batch_waits_for_more_only_up_to_its_delay() {
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(rx);
        let (first, _r1) = job(1);
        tx.send(first).unwrap();
        let late = std::thread::spawn({
            let tx = tx.clone();
            move || {
                std::thread::sleep(Duration::from_millis(30));
                let (j, r) = job(1);
                tx.send(j).unwrap();
                r
            }
        });
        let wait = Batching {
            max_images: 2,
            max_delay: Duration::from_secs(5),
        };
        let started = Instant::now();
        let batch = next_batch(&rx, &mut None, wait).unwrap();
        assert_eq!(sizes(&batch), [1, 1], "the late job joined the batch");
        // full at 2 images: it did not wait out the 5 s
        assert!(started.elapsed() < Duration::from_secs(4));
        let _r2 = late.join().unwrap();
        // without a delay, only what is already queued
        let (j, _r3) = job(1);
        tx.send(j).unwrap();
        let no_wait = Batching {
            max_images: 8,
            max_delay: Duration::ZERO,
        };
        assert_eq!(sizes(&next_batch(&rx, &mut None, no_wait).unwrap()), [1]);
        drop(tx);
        assert!(next_batch(&rx, &mut None, no_wait).is_none(), "engine gone");
    }

    #[test]
    fn a_job_whose_client_gave_up_is_never_taken_even_first() {
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(rx);
        let (gone, r) = job(2);
        drop(r);
        tx.send(gone).unwrap();
        let (waiting, _r) = job(3);
        tx.send(waiting).unwrap();
        let batch = next_batch(&rx, &mut None, Batching::OFF).unwrap();
        assert_eq!(sizes(&batch), [3], "the abandoned job was skipped");
        drop(tx);
        assert!(next_batch(&rx, &mut None, Batching::OFF).is_none());
    }

    #[test]
    fn a_carried_job_leads_the_next_batch_before_the_queue() {
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(rx);
        let (carried_job, _r1) = job(4);
        let (queued, _r2) = job(4);
        tx.send(queued).unwrap();
        let mut carried = Some(carried_job);
        let eight = Batching {
            max_images: 8,
            max_delay: Duration::ZERO,
        };
        let batch = next_batch(&rx, &mut carried, eight).unwrap();
        assert_eq!(sizes(&batch), [4, 4]);
        assert!(carried.is_none());
        // The queue closed: a carried job still runs, then the worker stops.
        let (last, _r3) = job(1);
        let mut carried = Some(last);
        drop(tx);
        assert_eq!(sizes(&next_batch(&rx, &mut carried, eight).unwrap()), [1]);
        assert!(next_batch(&rx, &mut carried, eight).is_none());
    }
}
