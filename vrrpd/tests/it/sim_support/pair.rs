//! The pair's events on the simulator: a vrrpd crash (VIPs left behind) and its restart by
//! the supervisor (resume), and the planned switchover phase with its make-before-break
//! checks.

use std::time::Duration;

use vrrpd::fsm::{Fsm, StateKind};
use vrrpd::timers;

use super::{ms, Sim};

impl Sim {
    /// vrrpd on node `i` dies: no shutdown, no priority 0, the VIPs stay where they are.
    pub fn crash(&mut self, i: usize) {
        self.note(format!("crash n{i}"));
        self.stale_vips[i] |= self.nodes[i].state() == StateKind::Master;
        // Drop what the dead daemon had not done yet.
        while self.nodes[i].poll_action().is_some() {}
        self.nodes[i] = Fsm::new(self.nodes[i].config().clone());
        self.crashed[i] = true;
    }

    /// The supervisor restarts vrrpd on node `i`, as the shell starts: resume when it finds
    /// the VIPs (and the link is up), otherwise a normal startup after removing them.
    pub fn restart(&mut self, i: usize) {
        let now = self.now;
        self.crashed[i] = false;
        if !self.iface_up[i] {
            self.note(format!("restart n{i} (link down)"));
            self.stale_vips[i] = false;
            self.nodes[i].handle_link_down(now);
            self.nodes[i].handle_startup(now);
        } else if self.stale_vips[i] {
            self.note(format!("restart n{i} with resume"));
            self.stale_vips[i] = false;
            if self.nodes[i].handle_startup_resume(now) {
                self.resumes_done += 1;
            }
        } else {
            self.note(format!("restart n{i}"));
            self.nodes[i].handle_startup(now);
        }
        self.drain(i);
    }

    /// A planned switchover of the single master, on a healed network: at every instant some
    /// node is master (make-before-break), and from `done_by` on exactly one, not the old
    /// one (with preempt: at the top priority of the others), and it does not change; the old
    /// master is a held Backup and did not abandon the switchover.
    pub fn switchover_phase(&mut self, end: Duration) {
        let masters = self.masters();
        if masters.len() != 1 {
            self.fail(&format!(
                "switchover phase needs one master, got {masters:?}"
            ));
        }
        let m = masters[0];
        let t0 = self.now;
        let aborted = self.nodes[m].counters().switchover_aborted;
        self.note(format!("SWITCHOVER n{m}"));
        if !self.nodes[m].handle_switchover(t0) {
            self.fail("the master refused the switchover");
        }
        self.drain(m);
        // The others hear priority 0 within D; the best waits its Skew_Time (under one
        // interval); its advert reaches the old master within D; backups that took over
        // together settle within one more D.
        let done_by = t0 + timers::adver_interval(self.interval_cs) + self.max_delay * 3 + ms(10);
        let preempt = self.preempt;
        let mut winner: Option<usize> = None;
        let mut check = |sim: &Sim| {
            let masters = sim.masters();
            if masters.is_empty() {
                sim.fail(&format!(
                    "no master during the switchover from n{m} at {t0:?}"
                ));
            }
            if sim.now < done_by {
                return;
            }
            if masters.len() != 1 || masters[0] == m {
                sim.fail(&format!(
                    "switchover from n{m} at {t0:?}: masters {masters:?}"
                ));
            }
            let old = &sim.nodes[m];
            if old.state() != StateKind::Backup || !old.switchover_hold() {
                sim.fail(&format!("old master n{m} is not a held backup"));
            }
            if old.counters().switchover_aborted != aborted {
                sim.fail("switchover abandoned on a healed network");
            }
            let w = masters[0];
            let top = (0..sim.nodes.len())
                .filter(|&i| i != m)
                .map(|i| sim.nodes[i].priority())
                .max()
                .unwrap_or(0);
            if preempt && sim.nodes[w].priority() != top {
                sim.fail(&format!("new master n{w} is not at the top priority {top}"));
            }
            if *winner.get_or_insert(w) != w {
                sim.fail("master changed after the switchover");
            }
        };
        self.run_until(done_by, &mut check);
        self.run_until(end.max(done_by), &mut check);
        self.switchovers_done += 1;
    }
}
