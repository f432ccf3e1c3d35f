package cluster

import "slices"

// Plan is what a worker incarnation should do about key groups, given its
// view of the cluster: the pure decision that a driver carries out with
// Acquire, Restore and Release, and that tests step with tables.
type Plan struct {
	// Owned are the leases it holds and keeps.
	Owned []Lease
	// Acquire are the key groups assigned to it whose lease is free, never
	// taken, or held by an incarnation that is no longer a member (dead, or
	// an earlier incarnation of this worker): acquire each with the lease
	// as seen here, then restore it.
	Acquire []Lease
	// HandOff are leases it holds of key groups now assigned to another
	// live worker: finish each (pause its intake, complete what is in
	// flight, commit a last checkpoint), then release it.
	HandOff []Lease
	// Waiting are key groups assigned to it that another live worker still
	// holds; that worker hands them off when its view agrees.
	Waiting []int
}

// PlanFor computes the plan of self among k key groups. A worker that is not
// a live member in t keeps what it holds and does nothing else: the others
// are taking its key groups over, and it learns so from
// [Membership.Lost].
func PlanFor(k int, self Holder, t Table) Plan {
	var p Plan
	if !t.Live(self) {
		for kg := range k {
			if l := t.Lease(kg); l.Holder == self {
				p.Owned = append(p.Owned, l)
			}
		}
		return p
	}
	ids := t.Assignable()
	owners := Assign(k, ids)
	for kg := range k {
		l := t.Lease(kg)
		mine := ids[owners[kg]] == self.Worker
		switch {
		case l.Holder == self && mine:
			p.Owned = append(p.Owned, l)
		case l.Holder == self:
			p.HandOff = append(p.HandOff, l)
		case !mine:
		case l.Holder.IsZero() || !t.Live(l.Holder):
			p.Acquire = append(p.Acquire, l)
		default:
			p.Waiting = append(p.Waiting, kg)
		}
	}
	return p
}

// KeyGroups returns the key groups of leases, in order.
func KeyGroups(ls []Lease) []int {
	kgs := make([]int, len(ls))
	for i, l := range ls {
		kgs[i] = l.KeyGroup
	}
	slices.Sort(kgs)
	return kgs
}

// TakenOver returns the key groups of held, leases this worker incarnation
// restored, whose lease t shows written since by anyone: another worker
// acquired it (while this one could not heartbeat, say) and fenced it, or
// this one released or acquired it again without restoring it with the new
// lease. Their commits may be fenced, their releases fail, and the plan
// may list them to acquire: restore what is held from the changelogs
// again, with the leases as t has them. A view behind this worker's own
// writes (a lower revision) reports nothing.
func TakenOver(held []Lease, t Table) []int {
	var out []int
	for _, h := range held {
		if t.Lease(h.KeyGroup).Revision > h.Revision {
			out = append(out, h.KeyGroup)
		}
	}
	slices.Sort(out)
	return out
}
