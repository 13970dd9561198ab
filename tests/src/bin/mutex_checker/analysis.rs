//! From the workers' records to the verdict: critical sections, overlaps between them, the
//! order of their fencing tokens, and lease losses heard too late.
//!
//! A critical section is one holding of one target by one worker process: it starts at the
//! worker's `enter` record (written after the grant arrived, so it starts no earlier than the
//! holding) and ends at the first of its `exit` record (written before the release is sent),
//! its `lost` record, or the kill of its process (the time is taken just before `kill(2)`, so
//! no earlier than the process could still act). The recorded interval therefore lies inside
//! the real holding: any two recorded intervals of one target that intersect are a real
//! violation of mutual exclusion, never an artefact of the recording.
//!
//! On a store that grants no fencing tokens (SFTP, create-only mode) a section without a token
//! is expected, and there is no token order to check: only overlaps and late losses count.
//!
//! Each section carries the mode it was held in ([`Held`]), and the rules follow it:
//! - Two intersecting sections of one target are an overlap (a violation) if either is
//!   exclusive. Two shared ones may intersect: that is counted (`shared_overlaps`), as the proof
//!   that the run exercised sharing. Slot sections are judged by their number instead: a sweep
//!   over each target's enters and ends counts the open sections, and every enter that finds N
//!   already open is an overlap (the run's semaphore of N was exceeded). The sweep also gives
//!   the largest number of sections open at once (`max_concurrent`).
//! - Token order, in enter order per target: an exclusive section's token must exceed the
//!   token of the previous exclusive section and of every section since (its token is greater
//!   than every token issued before it, in any mode); a shared or slot section's token must
//!   exceed the previous exclusive section's (its holder's lock file entry was added after that
//!   holder left). Equal tokens are a violation only where an exclusive section is one of the
//!   two: the shared holders of one daemon share their entry's token, and entries on different
//!   daemons are added in no order the records can see. Between exclusive sections alone this
//!   is the old rule: each token strictly above the previous one.
//! - A lease loss is late if a section that conflicts with the lost one (either of them
//!   exclusive) entered before the loss was heard; for slot sections, if a section entered
//!   past the N while the lost one was still open.
//!
//! In a set run a worker holds several sections at once, one per target of its set (each
//! exclusive, with its own target's token): an `enter` is malformed only if that process
//! already has a section of the same target open. Every target is judged alone, as in an
//! exclusive run. The run also counts the sets held (`set_taken` records), the waits that timed
//! out, and the longest wait for a set (finished, or given up at the stop): a deadlock between
//! sets would stall the run and show as timeouts, a long wait, and few sets.

use std::collections::BTreeMap;

use crate::modes::{Held, Mode};
use crate::records::Record;

/// How many problems are described in full; the rest are only counted.
const MAX_PROBLEMS: usize = 40;

/// The records of one worker process (one incarnation of a worker identity).
#[derive(Clone, Debug, Default)]
pub(crate) struct Instance {
    /// The worker identity, stable across restarts (`h0-c1`).
    pub(crate) client: String,
    /// Which process of that identity (0 for the first, +1 per restart).
    pub(crate) incarnation: u32,
    /// Its records, in the order it wrote them.
    pub(crate) records: Vec<Record>,
    /// When the coordinator killed it with SIGKILL (taken just before the `kill`), if it did.
    pub(crate) killed_at: Option<u64>,
}

/// What ended a critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndedBy {
    /// The worker's `exit` record.
    Exit,
    /// The worker heard that its lease was lost.
    Lost,
    /// The worker's process was killed.
    Kill,
    /// Nothing: the section counts until the end of the run.
    RunEnd,
}

/// One holding of one target.
#[derive(Clone, Debug)]
pub(crate) struct Section {
    /// The target's index.
    pub(crate) target: usize,
    /// `client#incarnation`.
    pub(crate) holder: String,
    /// The holding's fencing token.
    pub(crate) token: Option<u64>,
    /// How it held the lock.
    pub(crate) held: Held,
    /// When it began (monotonic ns).
    pub(crate) enter: u64,
    /// When it ended (monotonic ns).
    pub(crate) end: u64,
    /// What ended it.
    pub(crate) ended_by: EndedBy,
}

/// The verdict over all records of a run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Analysis {
    /// Critical sections.
    pub(crate) acquisitions: u64,
    /// Pairs of sections of one target whose intervals intersect, one of them exclusive; and
    /// slot sections that entered while N sections of their target were open.
    pub(crate) overlaps: u64,
    /// Sections of one target (by enter time) whose token was not above the token it must
    /// exceed (see the module doc).
    pub(crate) order_violations: u64,
    /// The same with equal tokens (always an exclusive section and another).
    pub(crate) equal_tokens: u64,
    /// Sections held shared.
    pub(crate) shared_sections: u64,
    /// Pairs of shared sections of one target whose intervals intersect (allowed).
    pub(crate) shared_overlaps: u64,
    /// The most sections of one target open at once.
    pub(crate) max_concurrent: u64,
    /// Sections ended by a lease-lost event.
    pub(crate) lost_leases: u64,
    /// Sections ended by the kill of their process (killed while holding).
    pub(crate) killed_holding: u64,
    /// Sections whose holder heard of the loss only after the next holder had entered.
    pub(crate) lost_late: u64,
    /// Sections without a token, on a store that grants tokens.
    pub(crate) missing_tokens: u64,
    /// Whether tokens were expected (and their order checked): not on SFTP.
    pub(crate) tokens_checked: bool,
    /// Sections with a token on a store that grants none (reported, not a violation).
    pub(crate) unexpected_tokens: u64,
    /// Resource writes a worker skipped because its holding had no token (SFTP).
    pub(crate) skipped_writes: u64,
    /// Sections with no end record and no kill (counted until the end of the run).
    pub(crate) unended: u64,
    /// Releases that failed with `LeaseLost` after a hold that `lost()` did not interrupt:
    /// the lease ran out while the release was on its way (a frozen daemon answers late), or
    /// a loss that `lost()` did not report. Not a violation by itself (the section ended at
    /// its exit record, and an overlap would show); reported for the record.
    pub(crate) release_losses: u64,
    /// Enter records that arrived while the same process still had a section open (in a set
    /// run: a section of the same target).
    pub(crate) malformed: u64,
    /// Whether this is a set run, where a wait that timed out is a violation: the worker's
    /// timeout is generous, so it means the sets stalled (a deadlock).
    pub(crate) sets: bool,
    /// Sets held (set runs: `lock_all` returned).
    pub(crate) set_sections: u64,
    /// Acquires (or `lock_all`s) that failed with `Timeout`: their wait ran out.
    pub(crate) wait_timeouts: u64,
    /// The longest wait for a set, in nanoseconds: of a `lock_all` that returned, or of one
    /// still waiting when its worker stopped.
    pub(crate) longest_wait: u64,
    /// Descriptions of the first problems found.
    pub(crate) problems: Vec<String>,
    /// Problems found beyond [`MAX_PROBLEMS`].
    pub(crate) problems_left_off: u64,
}

impl Analysis {
    /// Whether the run kept every promise the analysis checks.
    pub(crate) fn is_clean(&self) -> bool {
        self.overlaps == 0
            && self.order_violations == 0
            && self.equal_tokens == 0
            && self.lost_late == 0
            && self.missing_tokens == 0
            && !(self.sets && self.wait_timeouts > 0)
    }

    fn problem(&mut self, description: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(description);
        } else {
            self.problems_left_off += 1;
        }
    }
}

/// Milliseconds since `origin`, for problem descriptions.
fn ms(t: u64, origin: u64) -> String {
    format!("{:.3}ms", t.saturating_sub(origin) as f64 / 1e6)
}

fn describe(section: &Section, origin: u64) -> String {
    format!(
        "t{} {}{} token={} [{} .. {}] ended by {:?}",
        section.target,
        section.holder,
        match section.held {
            Held::Exclusive => "",
            Held::Shared => " (shared)",
            Held::Slot => " (slot)",
        },
        section
            .token
            .map_or_else(|| "none".to_owned(), |t| t.to_string()),
        ms(section.enter, origin),
        ms(section.end, origin),
        section.ended_by,
    )
}

/// The critical sections of every instance; `run_end` ends those that nothing ended.
/// `several`: whether a process may hold sections of several targets at once (a set run).
pub(crate) fn sections(
    instances: &[Instance],
    run_end: u64,
    analysis: &mut Analysis,
    origin: u64,
    several: bool,
) -> Vec<Section> {
    let mut all = Vec::new();
    for instance in instances {
        let holder = format!("{}#{}", instance.client, instance.incarnation);
        // The sections open in this process: at most one, except in a set run.
        let mut open: Vec<Section> = Vec::new();
        // The last closed section ended by an exit, and not yet released: a release that
        // fails with `LeaseLost` after it found a loss that `lost()` did not interrupt.
        let mut exited_unreleased = false;
        for record in &instance.records {
            match record {
                Record::Enter {
                    t,
                    target,
                    token,
                    mode,
                    ..
                } => {
                    let clashing = open.iter().position(|s| !several || s.target == *target);
                    if let Some(mut previous) = clashing.map(|i| open.remove(i)) {
                        // The worker is sequential: this cannot happen unless its log is
                        // damaged. End the previous section here, and say so.
                        previous.end = *t;
                        analysis.malformed += 1;
                        analysis.problem(format!(
                            "malformed log: {holder} entered t{target} with a section open: {}",
                            describe(&previous, origin)
                        ));
                        all.push(previous);
                    }
                    exited_unreleased = false;
                    open.push(Section {
                        target: *target,
                        holder: holder.clone(),
                        token: *token,
                        held: *mode,
                        enter: *t,
                        end: u64::MAX,
                        ended_by: EndedBy::RunEnd,
                    });
                }
                Record::Lost { t, target, .. } | Record::Exit { t, target } => {
                    let ending = open.iter().position(|s| s.target == *target);
                    if let Some(mut section) = ending.map(|i| open.remove(i)) {
                        section.end = *t;
                        let lost = matches!(record, Record::Lost { .. });
                        section.ended_by = if lost { EndedBy::Lost } else { EndedBy::Exit };
                        exited_unreleased = !lost;
                        all.push(section);
                    }
                }
                Record::WriteSkipped { .. } => analysis.skipped_writes += 1,
                Record::SetTaken { waited, .. } => {
                    analysis.set_sections += 1;
                    analysis.longest_wait = analysis.longest_wait.max(*waited);
                }
                Record::Stop {
                    waiting: Some(waiting),
                    ..
                } => analysis.longest_wait = analysis.longest_wait.max(*waiting),
                Record::AcquireError { kind, .. } if kind == "Timeout" => {
                    analysis.wait_timeouts += 1
                }
                Record::Released { lease_lost, .. } => {
                    if *lease_lost && exited_unreleased {
                        analysis.release_losses += 1;
                    }
                    exited_unreleased = false;
                }
                _ => {}
            }
        }
        for mut section in open {
            match instance.killed_at {
                Some(killed) => {
                    section.end = killed;
                    section.ended_by = EndedBy::Kill;
                }
                None => {
                    section.end = run_end;
                    analysis.unended += 1;
                    analysis.problem(format!(
                        "{holder} never ended its section (no exit, no lost, not killed): {}",
                        describe(&section, origin)
                    ));
                }
            }
            all.push(section);
        }
    }
    all
}

/// What became of the holdings a daemon kill found: counted once per kill and holding of a
/// client of the killed daemon (a holding that two kills found counts twice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KillHoldings {
    /// Holdings (entered, not yet released) of the killed daemon's clients at the kill.
    pub(crate) held: u64,
    /// Of those, the ones that outlived the restart: no loss heard, the release afterwards
    /// went through (the restarted daemon had them back), or a later kill found them still
    /// held.
    pub(crate) resumed: u64,
    /// The ones lost: their holder heard of the loss, or their release was refused with
    /// `LeaseLost`.
    pub(crate) lost: u64,
}

/// The daemon a worker identity (`h<daemon>-c<client>`) talks to; `None` for the partition
/// run's own clients.
pub(crate) fn daemon_of(client: &str) -> Option<usize> {
    let (daemon, _) = client.strip_prefix('h')?.split_once("-c")?;
    daemon.parse().ok()
}

/// Sorts the holdings found by each daemon kill (`kills`: daemon index and instant) into the
/// resumed and the lost. A holding runs from its enter record to its release record (or its
/// loss); the rest (a worker killed while holding, one still holding at the end of the run, a
/// release that failed otherwise) counts as held only.
pub(crate) fn across_kills(instances: &[Instance], kills: &[(usize, u64)]) -> KillHoldings {
    #[derive(PartialEq)]
    enum Outcome {
        Resumed,
        Lost,
        Unknown,
    }
    let mut out = KillHoldings::default();
    for instance in instances {
        let Some(daemon) = daemon_of(&instance.client) else {
            continue;
        };
        let kills: Vec<u64> = kills
            .iter()
            .filter(|(d, _)| *d == daemon)
            .map(|(_, t)| *t)
            .collect();
        if kills.is_empty() {
            continue;
        }
        // (target, enter, end, outcome) of every holding of this process.
        let mut holdings: Vec<(usize, u64, u64, Outcome)> = Vec::new();
        let mut open: Vec<(usize, u64)> = Vec::new();
        let close = |open: &mut Vec<(usize, u64)>, target: usize| {
            let at = open.iter().position(|(t, _)| *t == target)?;
            Some(open.remove(at).1)
        };
        for record in &instance.records {
            match record {
                Record::Enter { t, target, .. } => open.push((*target, *t)),
                Record::Lost { t, target, .. } => {
                    if let Some(enter) = close(&mut open, *target) {
                        holdings.push((*target, enter, *t, Outcome::Lost));
                    }
                }
                Record::Released {
                    t,
                    target,
                    error,
                    lease_lost,
                } => {
                    if let Some(enter) = close(&mut open, *target) {
                        let outcome = match (error, lease_lost) {
                            (None, _) => Outcome::Resumed,
                            (Some(_), true) => Outcome::Lost,
                            (Some(_), false) => Outcome::Unknown,
                        };
                        holdings.push((*target, enter, *t, outcome));
                    }
                }
                _ => {}
            }
        }
        let end = instance.killed_at.unwrap_or(u64::MAX);
        holdings.extend(
            open.into_iter()
                .map(|(target, enter)| (target, enter, end, Outcome::Unknown)),
        );
        for (_, enter, end, outcome) in &holdings {
            let found: Vec<u64> = kills
                .iter()
                .copied()
                .filter(|k| enter < k && k < end)
                .collect();
            for (i, _) in found.iter().enumerate() {
                out.held += 1;
                // Every kill but the last that found the holding: it was still held at the
                // next one, so it outlived this one.
                if i + 1 < found.len() || *outcome == Outcome::Resumed {
                    out.resumed += 1;
                } else if *outcome == Outcome::Lost {
                    out.lost += 1;
                }
            }
        }
    }
    out
}

/// Checks the records of a run. `origin` is the run's start (for descriptions only).
/// `tokens`: whether the store grants fencing tokens; if not (SFTP), sections without one
/// are expected and the token order is not checked. `mode`: the run's lock modes (a
/// semaphore's N bounds its slot sections).
pub(crate) fn analyze(
    instances: &[Instance],
    run_end: u64,
    origin: u64,
    tokens: bool,
    mode: Mode,
) -> Analysis {
    let mut analysis = Analysis {
        tokens_checked: tokens,
        sets: mode.is_set(),
        ..Analysis::default()
    };
    let all = sections(instances, run_end, &mut analysis, origin, mode.is_set());
    if analysis.sets && analysis.wait_timeouts > 0 {
        analysis.problem(format!(
            "{} lock_all waits timed out: the sets stalled (a deadlock?)",
            analysis.wait_timeouts
        ));
    }
    analysis.acquisitions = all.len() as u64;
    let mut by_target: BTreeMap<usize, Vec<Section>> = BTreeMap::new();
    for section in all {
        match (tokens, section.token) {
            (true, None) => {
                analysis.missing_tokens += 1;
                analysis.problem(format!("no token: {}", describe(&section, origin)));
            }
            (false, Some(_)) => analysis.unexpected_tokens += 1,
            _ => {}
        }
        match section.ended_by {
            EndedBy::Lost => analysis.lost_leases += 1,
            EndedBy::Kill => analysis.killed_holding += 1,
            EndedBy::Exit | EndedBy::RunEnd => {}
        }
        if section.held == Held::Shared {
            analysis.shared_sections += 1;
        }
        by_target.entry(section.target).or_default().push(section);
    }
    for sections in by_target.values_mut() {
        sections.sort_by_key(|s| (s.enter, s.end));
        check_overlaps(sections, &mut analysis, origin);
        count_concurrent(sections, mode.slots(), &mut analysis, origin);
        if tokens {
            check_token_order(sections, &mut analysis, origin);
        }
        check_late_losses(sections, &mut analysis, origin);
    }
    analysis
}

/// Whether two sections of one target must not overlap: either is exclusive (slot sections
/// are judged by their number, shared ones overlap freely).
fn conflict(a: &Section, b: &Section) -> bool {
    a.held == Held::Exclusive || b.held == Held::Exclusive || a.held != b.held
}

/// Overlaps, in sections sorted by enter: every later section that enters before one ends.
fn check_overlaps(sections: &[Section], analysis: &mut Analysis, origin: u64) {
    for (i, a) in sections.iter().enumerate() {
        for b in sections[i + 1..].iter().take_while(|b| b.enter <= a.end) {
            if conflict(a, b) {
                analysis.overlaps += 1;
                analysis.problem(format!(
                    "overlap: {} and {}",
                    describe(a, origin),
                    describe(b, origin)
                ));
            } else if a.held == Held::Shared {
                analysis.shared_overlaps += 1;
            }
        }
    }
}

/// The most sections open at once, and (with a semaphore of `slots`) the slot sections that
/// entered while that many were open, and the lost ones that were open then (heard late).
/// An interval includes both ends, as for overlaps: at equal times an enter counts first.
fn count_concurrent(
    sections: &[Section],
    slots: Option<u32>,
    analysis: &mut Analysis,
    origin: u64,
) {
    // (time, 0 = enter / 1 = end, index): sorted, enters come before ends at equal times.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(sections.len() * 2);
    for (i, s) in sections.iter().enumerate() {
        events.push((s.enter, 0, i));
        events.push((s.end, 1, i));
    }
    events.sort_unstable();
    let mut open: Vec<usize> = Vec::new();
    for (_, kind, i) in events {
        if kind == 1 {
            open.retain(|&o| o != i);
            continue;
        }
        let entering = &sections[i];
        if let (Some(n), Held::Slot) = (slots, entering.held) {
            let open_slots: Vec<usize> = open
                .iter()
                .copied()
                .filter(|&o| sections[o].held == Held::Slot)
                .collect();
            if open_slots.len() >= n as usize {
                analysis.overlaps += 1;
                let holders: Vec<String> = open_slots
                    .iter()
                    .map(|&o| describe(&sections[o], origin))
                    .collect();
                analysis.problem(format!(
                    "over {n} slots: {} entered while {} were open: {}",
                    describe(entering, origin),
                    open_slots.len(),
                    holders.join("; ")
                ));
                for &o in &open_slots {
                    let lost = &sections[o];
                    if lost.ended_by == EndedBy::Lost {
                        analysis.lost_late += 1;
                        analysis.problem(format!(
                            "lease loss heard late: {} heard at {}, but {} entered at {} past \
                             the {n} slots",
                            lost.holder,
                            ms(lost.end, origin),
                            entering.holder,
                            ms(entering.enter, origin)
                        ));
                    }
                }
            }
        }
        open.push(i);
        analysis.max_concurrent = analysis.max_concurrent.max(open.len() as u64);
    }
}

/// Token order, in sections sorted by enter (see the module doc).
fn check_token_order(sections: &[Section], analysis: &mut Analysis, origin: u64) {
    // The last exclusive section, and the section with the highest token since it (itself
    // included): what an exclusive section's token must exceed.
    let mut last_exclusive: Option<&Section> = None;
    let mut highest_since: Option<&Section> = None;
    for section in sections {
        let Some(token) = section.token else { continue };
        let bar = match section.held {
            Held::Exclusive => highest_since,
            Held::Shared | Held::Slot => last_exclusive,
        };
        if let Some(before) = bar {
            let before_token = before.token.expect("only sections with tokens");
            if token < before_token {
                analysis.order_violations += 1;
                analysis.problem(format!(
                    "token decreased: {} then {}",
                    describe(before, origin),
                    describe(section, origin)
                ));
            } else if token == before_token {
                analysis.equal_tokens += 1;
                analysis.problem(format!(
                    "equal tokens: {} then {}",
                    describe(before, origin),
                    describe(section, origin)
                ));
            }
        }
        if section.held == Held::Exclusive {
            last_exclusive = Some(section);
            highest_since = Some(section);
        } else if highest_since.is_none_or(|h| h.token.is_some_and(|t| token > t)) {
            highest_since = Some(section);
        }
    }
}

/// Late losses: the holder must hear of the loss before a section that conflicts with it
/// enters (slot sections: in [`count_concurrent`]).
fn check_late_losses(sections: &[Section], analysis: &mut Analysis, origin: u64) {
    for (i, a) in sections.iter().enumerate() {
        if a.ended_by != EndedBy::Lost {
            continue;
        }
        let next = sections[i + 1..].iter().find(|b| conflict(a, b));
        if let Some(b) = next.filter(|b| a.end > b.enter) {
            analysis.lost_late += 1;
            analysis.problem(format!(
                "lease loss heard late: {} heard at {}, but {} entered at {}",
                a.holder,
                ms(a.end, origin),
                b.holder,
                ms(b.enter, origin)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A builder of one instance's records on target `target`.
    struct Worker {
        instance: Instance,
    }

    impl Worker {
        fn new(client: &str) -> Worker {
            Worker {
                instance: Instance {
                    client: client.to_owned(),
                    incarnation: 0,
                    records: vec![Record::Start {
                        t: 0,
                        client: client.to_owned(),
                        pid: 1,
                    }],
                    killed_at: None,
                },
            }
        }

        fn enter(self, target: usize, t: u64, token: u64) -> Self {
            self.enter_as(Held::Exclusive, target, t, token)
        }

        fn shared(self, target: usize, t: u64, token: u64) -> Self {
            self.enter_as(Held::Shared, target, t, token)
        }

        fn slot(self, target: usize, t: u64, token: u64) -> Self {
            self.enter_as(Held::Slot, target, t, token)
        }

        fn enter_as(mut self, held: Held, target: usize, t: u64, token: u64) -> Self {
            self.instance.records.push(Record::Enter {
                t: t * MS,
                target,
                client: self.instance.client.clone(),
                token: Some(token),
                mode: held,
            });
            self.instance.records.push(Record::Write {
                t: t * MS + 1,
                target,
                token: Some(token),
                accepted: Some(true),
            });
            self
        }

        /// Enters without a token, as on SFTP, and skips the resource write.
        fn enter_tokenless(mut self, target: usize, t: u64) -> Self {
            self.instance.records.push(Record::Enter {
                t: t * MS,
                target,
                client: self.instance.client.clone(),
                token: None,
                mode: Held::Exclusive,
            });
            self.instance.records.push(Record::WriteSkipped {
                t: t * MS + 1,
                target,
            });
            self
        }

        fn exit(self, target: usize, t: u64) -> Self {
            self.exit_only(target, t).released(target, t, false)
        }

        fn exit_only(mut self, target: usize, t: u64) -> Self {
            self.instance
                .records
                .push(Record::Exit { t: t * MS, target });
            self
        }

        fn lost(mut self, target: usize, t: u64) -> Self {
            self.instance.records.push(Record::Lost {
                t: t * MS,
                target,
                reason: "the lease ran out".into(),
            });
            self.released(target, t, true)
        }

        fn released(mut self, target: usize, t: u64, lease_lost: bool) -> Self {
            self.instance.records.push(Record::Released {
                t: t * MS + 2,
                target,
                error: lease_lost.then(|| "lease lost".to_owned()),
                lease_lost,
            });
            self
        }

        /// A set run's `lock_all` returned after waiting `waited` ms.
        fn set(mut self, targets: &[usize], t: u64, waited: u64) -> Self {
            self.instance.records.push(Record::SetTaken {
                t: t * MS,
                targets: targets.to_vec(),
                waited: waited * MS,
            });
            self
        }

        fn timed_out(mut self, target: usize, t: u64) -> Self {
            self.instance.records.push(Record::AcquireError {
                t: t * MS,
                target,
                kind: "Timeout".into(),
                message: "the wait ran out".into(),
            });
            self
        }

        fn stopped_waiting(mut self, t: u64, waiting: u64) -> Self {
            self.instance.records.push(Record::Stop {
                t: t * MS,
                waiting: Some(waiting * MS),
            });
            self
        }

        fn killed(mut self, t: u64) -> Self {
            self.instance.killed_at = Some(t * MS);
            self
        }

        fn done(self) -> Instance {
            self.instance
        }
    }

    fn run(instances: &[Instance]) -> Analysis {
        run_in(Mode::Exclusive, instances)
    }

    fn run_in(mode: Mode, instances: &[Instance]) -> Analysis {
        analyze(instances, 10_000 * MS, 0, true, mode)
    }

    const MIXED: Mode = Mode::Mixed { shared_share: 0.5 };

    /// As on SFTP: the store grants no tokens.
    fn run_tokenless(instances: &[Instance]) -> Analysis {
        analyze(instances, 10_000 * MS, 0, false, Mode::Exclusive)
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let instances = [
            Worker::new("a")
                .enter(0, 10, 1)
                .exit(0, 20)
                .enter(1, 25, 1)
                .exit(1, 30)
                .enter(0, 60, 4)
                .exit(0, 65)
                .done(),
            // Killed while holding: the kill ends the section before b enters.
            Worker::new("b")
                .enter(0, 21, 2)
                .exit(0, 30)
                .enter(0, 40, 3)
                .killed(45)
                .done(),
            // Lost its lease, and heard it before anyone else entered.
            Worker::new("c")
                .enter(1, 31, 2)
                .lost(1, 50)
                .enter(1, 55, 3)
                .exit(1, 56)
                .done(),
            Worker::new("d").enter(0, 71, 5).exit(0, 80).done(),
        ];
        let analysis = run(&instances);
        assert_eq!(analysis.acquisitions, 8);
        assert_eq!(analysis.overlaps, 0, "{:#?}", analysis.problems);
        assert_eq!(analysis.order_violations, 0);
        assert_eq!(analysis.equal_tokens, 0);
        assert_eq!(analysis.lost_leases, 1);
        assert_eq!(analysis.killed_holding, 1);
        assert_eq!(analysis.lost_late, 0);
        assert_eq!(analysis.missing_tokens, 0);
        assert_eq!(analysis.unended, 0);
        assert_eq!(analysis.release_losses, 0);
        assert!(analysis.is_clean());
        assert!(analysis.problems.is_empty(), "{:#?}", analysis.problems);
    }

    #[test]
    fn intersecting_sections_of_one_target_are_an_overlap() {
        let instances = [
            Worker::new("a").enter(0, 10, 1).exit(0, 20).done(),
            Worker::new("b").enter(0, 15, 2).exit(0, 25).done(),
            // Another target at the same time is no overlap.
            Worker::new("c").enter(1, 12, 1).exit(1, 22).done(),
        ];
        let analysis = run(&instances);
        assert_eq!(analysis.acquisitions, 3);
        assert_eq!(analysis.overlaps, 1);
        assert_eq!(analysis.order_violations, 0);
        assert_eq!(analysis.equal_tokens, 0);
        assert_eq!(analysis.lost_late, 0);
        assert!(!analysis.is_clean());
        assert!(analysis.problems[0].starts_with("overlap: t0 a#0"));
    }

    #[test]
    fn one_long_section_overlapping_two_counts_twice() {
        let instances = [
            Worker::new("a").enter(0, 10, 1).exit(0, 100).done(),
            Worker::new("b")
                .enter(0, 20, 2)
                .exit(0, 30)
                .enter(0, 40, 3)
                .exit(0, 50)
                .done(),
        ];
        assert_eq!(run(&instances).overlaps, 2);
    }

    #[test]
    fn a_decreasing_token_is_an_order_violation() {
        let instances = [
            Worker::new("a").enter(0, 10, 5).exit(0, 20).done(),
            Worker::new("b").enter(0, 30, 4).exit(0, 40).done(),
            Worker::new("c").enter(0, 50, 6).exit(0, 60).done(),
        ];
        let analysis = run(&instances);
        assert_eq!(analysis.order_violations, 1);
        assert_eq!(analysis.equal_tokens, 0);
        assert_eq!(analysis.overlaps, 0);
        assert!(!analysis.is_clean());
    }

    #[test]
    fn equal_tokens_are_counted_apart() {
        let instances = [
            Worker::new("a").enter(0, 10, 3).exit(0, 20).done(),
            Worker::new("b").enter(0, 30, 3).exit(0, 40).done(),
        ];
        let analysis = run(&instances);
        assert_eq!(analysis.equal_tokens, 1);
        assert_eq!(analysis.order_violations, 0);
        assert_eq!(analysis.overlaps, 0);
        assert!(!analysis.is_clean());
    }

    #[test]
    fn a_loss_heard_after_the_next_enter_is_late() {
        let instances = [
            Worker::new("a").enter(0, 10, 1).lost(0, 300).done(),
            Worker::new("b").enter(0, 200, 2).exit(0, 400).done(),
        ];
        let analysis = run(&instances);
        assert_eq!(analysis.lost_leases, 1);
        assert_eq!(analysis.lost_late, 1);
        // The late holder was still in its section: that is an overlap too.
        assert_eq!(analysis.overlaps, 1);
        assert_eq!(analysis.order_violations, 0);
        assert!(!analysis.is_clean());
    }

    #[test]
    fn an_open_section_ends_at_the_kill_or_else_at_the_end_of_the_run() {
        let killed = [
            Worker::new("a").enter(0, 10, 1).killed(150).done(),
            Worker::new("b").enter(0, 200, 2).exit(0, 210).done(),
        ];
        let analysis = run(&killed);
        assert_eq!(analysis.overlaps, 0);
        assert_eq!(analysis.unended, 0);
        assert_eq!(analysis.killed_holding, 1);

        let not_killed = [
            Worker::new("a").enter(0, 10, 1).done(),
            Worker::new("b").enter(0, 200, 2).exit(0, 210).done(),
        ];
        let analysis = run(&not_killed);
        assert_eq!(analysis.unended, 1);
        assert_eq!(analysis.overlaps, 1);
    }

    #[test]
    fn a_release_that_finds_the_lease_lost_after_a_quiet_hold_is_counted() {
        let instances = [Worker::new("a")
            .enter(0, 10, 1)
            .exit_only(0, 20)
            .released(0, 20, true)
            .done()];
        let analysis = run(&instances);
        assert_eq!(analysis.release_losses, 1);
        // Not a safety violation by itself.
        assert!(analysis.is_clean());
    }

    #[test]
    fn a_section_without_a_token_is_counted() {
        let mut a = Worker::new("a").enter(0, 10, 1).exit(0, 20).done();
        if let Record::Enter { token, .. } = &mut a.records[1] {
            *token = None;
        }
        let b = Worker::new("b").enter(0, 30, 2).exit(0, 40).done();
        let analysis = run(&[a, b]);
        assert_eq!(analysis.missing_tokens, 1);
        assert_eq!(analysis.order_violations, 0);
        assert!(!analysis.is_clean());
    }

    #[test]
    fn without_tokens_a_clean_history_passes_and_nothing_is_ordered() {
        let instances = [
            Worker::new("a")
                .enter_tokenless(0, 10)
                .exit(0, 20)
                .enter_tokenless(1, 25)
                .exit(1, 30)
                .done(),
            Worker::new("b")
                .enter_tokenless(0, 21)
                .exit(0, 30)
                .enter_tokenless(0, 40)
                .killed(45)
                .done(),
            Worker::new("c")
                .enter_tokenless(1, 31)
                .lost(1, 50)
                .enter_tokenless(1, 55)
                .exit(1, 56)
                .done(),
        ];
        let analysis = run_tokenless(&instances);
        assert_eq!(analysis.acquisitions, 6);
        assert_eq!(analysis.missing_tokens, 0);
        assert_eq!(analysis.unexpected_tokens, 0);
        assert_eq!(analysis.skipped_writes, 6);
        assert_eq!(analysis.order_violations, 0);
        assert_eq!(analysis.equal_tokens, 0);
        assert_eq!(analysis.overlaps, 0, "{:#?}", analysis.problems);
        assert_eq!((analysis.lost_leases, analysis.killed_holding), (1, 1));
        assert!(!analysis.tokens_checked);
        assert!(analysis.is_clean(), "{:#?}", analysis.problems);
        assert!(analysis.problems.is_empty(), "{:#?}", analysis.problems);

        // The same records where tokens are expected: every section lacks one.
        let strict = run(&instances);
        assert_eq!(strict.missing_tokens, 6);
        assert!(!strict.is_clean());
    }

    #[test]
    fn without_tokens_overlaps_and_late_losses_still_count() {
        let instances = [
            Worker::new("a").enter_tokenless(0, 10).exit(0, 20).done(),
            Worker::new("b").enter_tokenless(0, 15).exit(0, 25).done(),
            Worker::new("c").enter_tokenless(1, 10).lost(1, 300).done(),
            Worker::new("d").enter_tokenless(1, 200).exit(1, 400).done(),
        ];
        let analysis = run_tokenless(&instances);
        assert_eq!(analysis.overlaps, 2, "{:#?}", analysis.problems);
        assert_eq!(analysis.lost_late, 1);
        assert_eq!(analysis.missing_tokens, 0);
        assert!(!analysis.is_clean());
    }

    #[test]
    fn without_tokens_a_stray_token_is_reported_not_ordered() {
        // Decreasing and equal tokens, which would be violations where tokens are granted.
        let instances = [
            Worker::new("a").enter(0, 10, 5).exit(0, 20).done(),
            Worker::new("b").enter(0, 30, 5).exit(0, 40).done(),
            Worker::new("c").enter(0, 50, 4).exit(0, 60).done(),
        ];
        let analysis = run_tokenless(&instances);
        assert_eq!(analysis.unexpected_tokens, 3);
        assert_eq!((analysis.order_violations, analysis.equal_tokens), (0, 0));
        assert!(analysis.is_clean());
        let strict = run(&instances);
        assert_eq!((strict.order_violations, strict.equal_tokens), (1, 1));
    }

    #[test]
    fn shared_sections_may_overlap_and_share_a_token() {
        let instances = [
            // Two readers on one daemon share its entry's token; a third on another daemon
            // holds a greater one but enters first.
            Worker::new("a").shared(0, 10, 2).exit(0, 30).done(),
            Worker::new("b").shared(0, 12, 2).exit(0, 25).done(),
            Worker::new("c").shared(0, 5, 3).exit(0, 20).done(),
            // A writer after all of them, above every token before it.
            Worker::new("d").enter(0, 40, 4).exit(0, 50).done(),
            // A reader after the writer, with a fresh entry.
            Worker::new("e").shared(0, 60, 5).exit(0, 70).done(),
        ];
        let analysis = run_in(MIXED, &instances);
        assert_eq!(analysis.overlaps, 0, "{:#?}", analysis.problems);
        assert_eq!(analysis.shared_overlaps, 3);
        assert_eq!(analysis.shared_sections, 4);
        assert_eq!(analysis.max_concurrent, 3);
        assert_eq!((analysis.order_violations, analysis.equal_tokens), (0, 0));
        assert!(analysis.is_clean(), "{:#?}", analysis.problems);
        assert!(analysis.problems.is_empty(), "{:#?}", analysis.problems);
    }

    #[test]
    fn an_exclusive_section_overlapping_a_shared_one_is_an_overlap() {
        let instances = [
            Worker::new("a").shared(0, 10, 2).exit(0, 30).done(),
            Worker::new("b").shared(0, 12, 2).exit(0, 25).done(),
            Worker::new("c").enter(0, 20, 3).exit(0, 40).done(),
        ];
        let analysis = run_in(MIXED, &instances);
        assert_eq!(analysis.overlaps, 2, "{:#?}", analysis.problems);
        assert_eq!(analysis.shared_overlaps, 1);
        assert!(!analysis.is_clean());
        assert!(analysis.problems[0].contains("(shared)"));
    }

    #[test]
    fn an_exclusive_token_must_exceed_every_shared_token_before_it() {
        let equal = [
            Worker::new("a").shared(0, 10, 3).exit(0, 20).done(),
            Worker::new("b").shared(0, 12, 2).exit(0, 22).done(),
            Worker::new("c").enter(0, 30, 3).exit(0, 40).done(),
        ];
        let analysis = run_in(MIXED, &equal);
        assert_eq!((analysis.order_violations, analysis.equal_tokens), (0, 1));
        let lower = [
            Worker::new("a").shared(0, 10, 3).exit(0, 20).done(),
            Worker::new("b").shared(0, 12, 2).exit(0, 22).done(),
            Worker::new("c").enter(0, 30, 2).exit(0, 40).done(),
        ];
        let analysis = run_in(MIXED, &lower);
        assert_eq!((analysis.order_violations, analysis.equal_tokens), (1, 0));
        assert!(!analysis.is_clean());
    }

    #[test]
    fn a_shared_token_must_exceed_the_exclusive_one_before_it() {
        let instances = [
            Worker::new("a").enter(0, 10, 5).exit(0, 20).done(),
            // An entry from before the writer: a stale reader.
            Worker::new("b").shared(0, 30, 4).exit(0, 40).done(),
            Worker::new("c").shared(0, 32, 5).exit(0, 42).done(),
            Worker::new("d").shared(0, 34, 6).exit(0, 44).done(),
        ];
        let analysis = run_in(MIXED, &instances);
        assert_eq!((analysis.order_violations, analysis.equal_tokens), (1, 1));
        assert_eq!(analysis.overlaps, 0);
        assert!(!analysis.is_clean());
    }

    #[test]
    fn a_reader_hearing_its_loss_after_a_writer_entered_is_late_but_not_after_a_reader() {
        let instances = [
            Worker::new("a").shared(0, 10, 2).lost(0, 300).done(),
            Worker::new("b").shared(0, 100, 3).exit(0, 150).done(),
            Worker::new("c").enter(0, 200, 4).exit(0, 400).done(),
        ];
        let analysis = run_in(MIXED, &instances);
        assert_eq!(analysis.lost_late, 1, "{:#?}", analysis.problems);
        assert!(analysis.problems.iter().any(|p| p.contains("a#0 heard")));
        assert_eq!(analysis.overlaps, 1);
    }

    #[test]
    fn a_semaphore_of_n_may_have_n_sections_open_but_not_n_plus_one() {
        let within = [
            Worker::new("a").slot(0, 10, 2).exit(0, 40).done(),
            Worker::new("b").slot(0, 12, 2).exit(0, 30).done(),
            Worker::new("c").slot(0, 14, 3).exit(0, 45).done(),
            // Enters after b left: still three open.
            Worker::new("d").slot(0, 31, 3).exit(0, 50).done(),
            Worker::new("e").slot(1, 20, 1).exit(1, 50).done(),
        ];
        let analysis = run_in(Mode::Slots(3), &within);
        assert_eq!(analysis.overlaps, 0, "{:#?}", analysis.problems);
        assert_eq!(analysis.max_concurrent, 3);
        assert_eq!(analysis.shared_overlaps, 0);
        assert!(analysis.is_clean(), "{:#?}", analysis.problems);

        // The same with a fourth section in the middle: N + 1 open at once.
        let mut over = within.to_vec();
        over.push(Worker::new("f").slot(0, 20, 4).exit(0, 22).done());
        let analysis = run_in(Mode::Slots(3), &over);
        assert_eq!(analysis.overlaps, 1, "{:#?}", analysis.problems);
        assert_eq!(analysis.max_concurrent, 4);
        assert!(analysis.problems[0].starts_with("over 3 slots: t0 f#0 (slot)"));
        assert!(!analysis.is_clean());

        // A semaphore of 2 where three were open twice over.
        let analysis = run_in(Mode::Slots(2), &within);
        assert_eq!(analysis.overlaps, 2, "{:#?}", analysis.problems);
    }

    #[test]
    fn a_slot_lost_and_taken_past_the_n_before_the_loss_was_heard_is_late() {
        let instances = [
            Worker::new("a").slot(0, 10, 2).lost(0, 300).done(),
            Worker::new("b").slot(0, 200, 3).exit(0, 400).done(),
        ];
        let analysis = run_in(Mode::Slots(1), &instances);
        assert_eq!((analysis.overlaps, analysis.lost_late), (1, 1));
        // Within the N, a loss heard while others hold is no matter.
        let analysis = run_in(Mode::Slots(2), &instances);
        assert_eq!((analysis.overlaps, analysis.lost_late), (0, 0));
    }

    #[test]
    fn a_set_holds_a_section_per_target_and_sets_on_a_shared_target_take_turns() {
        let instances = [
            // t0 and t1, then t2 and t0.
            Worker::new("a")
                .set(&[1, 0], 10, 1)
                .enter(0, 10, 1)
                .enter(1, 10, 1)
                .exit(0, 20)
                .exit_only(1, 20)
                .set(&[2, 0], 40, 5)
                .enter(0, 40, 3)
                .enter(2, 40, 2)
                .killed(45)
                .done(),
            // t1 and t2 while a holds t0 and t1 would overlap on t1: b waits for a.
            Worker::new("b")
                .set(&[1, 2], 21, 11)
                .enter(1, 21, 2)
                .enter(2, 21, 1)
                .lost(2, 30)
                .exit(1, 30)
                .stopped_waiting(90, 30)
                .done(),
        ];
        let analysis = run_in(Mode::Set, &instances);
        assert_eq!(analysis.set_sections, 3);
        assert_eq!(analysis.acquisitions, 6);
        assert_eq!(analysis.malformed, 0, "{:#?}", analysis.problems);
        assert_eq!(analysis.overlaps, 0, "{:#?}", analysis.problems);
        assert_eq!((analysis.order_violations, analysis.equal_tokens), (0, 0));
        assert_eq!((analysis.killed_holding, analysis.lost_leases), (2, 1));
        assert_eq!(analysis.max_concurrent, 1);
        assert_eq!(analysis.wait_timeouts, 0);
        // The wait b gave up at the stop was the longest.
        assert_eq!(analysis.longest_wait, 30 * MS);
        assert!(analysis.is_clean(), "{:#?}", analysis.problems);
        assert!(analysis.problems.is_empty(), "{:#?}", analysis.problems);

        // The same records outside a set run: a process with two sections open is malformed.
        let analysis = run(&instances);
        assert!(analysis.malformed > 0);
    }

    #[test]
    fn sets_that_overlap_on_one_target_are_an_overlap_there_only() {
        let instances = [
            Worker::new("a")
                .set(&[0, 1], 10, 0)
                .enter(0, 10, 1)
                .enter(1, 10, 1)
                .exit(0, 30)
                .exit_only(1, 30)
                .done(),
            // Shares t1 with a, at the same time, with a higher token.
            Worker::new("b")
                .set(&[2, 1], 20, 0)
                .enter(1, 20, 2)
                .enter(2, 20, 1)
                .exit(1, 40)
                .exit_only(2, 40)
                .done(),
        ];
        let analysis = run_in(Mode::Set, &instances);
        assert_eq!(analysis.overlaps, 1, "{:#?}", analysis.problems);
        assert!(analysis.problems[0].starts_with("overlap: t1 a#0"));
        assert_eq!(analysis.max_concurrent, 2);
        assert_eq!(analysis.order_violations, 0);
        assert!(!analysis.is_clean());
    }

    #[test]
    fn a_set_token_must_rise_per_target() {
        let instances = [
            Worker::new("a")
                .set(&[0, 1], 10, 0)
                .enter(0, 10, 5)
                .enter(1, 10, 1)
                .exit(0, 20)
                .exit_only(1, 20)
                .done(),
            // Tokens of different targets are unrelated (1 < 5), but t0's must rise.
            Worker::new("b")
                .set(&[1, 0], 30, 0)
                .enter(0, 30, 4)
                .enter(1, 30, 2)
                .exit(0, 40)
                .exit_only(1, 40)
                .done(),
        ];
        let analysis = run_in(Mode::Set, &instances);
        assert_eq!((analysis.order_violations, analysis.overlaps), (1, 0));
        assert!(analysis.problems[0].contains("t0 b#0 token=4"));
    }

    #[test]
    fn a_set_wait_that_timed_out_is_a_stall() {
        let instances = [Worker::new("a")
            .timed_out(0, 20_010)
            .set(&[0, 2], 20_020, 3)
            .enter(0, 20_020, 1)
            .enter(2, 20_020, 1)
            .exit(0, 20_030)
            .exit_only(2, 20_030)
            .done()];
        let analysis = run_in(Mode::Set, &instances);
        assert_eq!(analysis.wait_timeouts, 1);
        assert!(!analysis.is_clean());
        assert!(analysis.problems[0].contains("timed out"));
        // Elsewhere a timeout is counted, not a violation.
        assert!(run(&instances[..1]).is_clean());
    }
    #[test]
    fn the_holdings_a_daemon_kill_found_are_sorted_into_resumed_and_lost() {
        let instances = [
            // Daemon 0's clients: one resumed (it exits at 95 and its release, 2 ns later,
            // lands after the kill), one lost, one that entered after the kill, one killed
            // while holding.
            Worker::new("h0-c0").enter(0, 90, 1).exit(0, 95).done(),
            Worker::new("h0-c1").enter(1, 80, 2).lost(1, 130).done(),
            Worker::new("h0-c2").enter(0, 110, 3).exit(0, 120).done(),
            Worker::new("h0-c3").enter(1, 70, 4).killed(150).done(),
            // Daemon 1's client holds across daemon 0's kill: not counted for it; and through
            // its own two kills (at 200 and 300), released after them.
            Worker::new("h1-c0").enter(0, 50, 5).exit(0, 310).done(),
        ];
        let kills = [(0, 95 * MS + 1), (1, 200 * MS), (1, 300 * MS)];
        let found = across_kills(&instances, &kills);
        assert_eq!(
            found,
            KillHoldings {
                held: 5,
                resumed: 3,
                lost: 1
            }
        );
        assert_eq!(daemon_of("h12-c3"), Some(12));
        assert_eq!(daemon_of("part-h0"), None);
    }
}
