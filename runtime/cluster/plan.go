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
