package runtime

import "maps"

// positions are cluster mode's reader positions of the owned key groups:
// for each key group and reader, the stream sequence up to which the key
// group's messages are in its committed state, and what bounds the next
// one a checkpoint writes after a live move (clustermove.go). The
// committer's, read and changed on its goroutine.
type positions struct {
	committed map[int]map[string]uint64
	// floor: a reader that went back for a key group that joined reports,
	// until it caught up, less than it had delivered of the others; their
	// positions never go below what it had delivered then.
	floor map[int]map[string]uint64
	// ceiling: a reader that stopped a key group's intake delivered nothing
	// of it since; its positions never go past where it stopped.
	ceiling map[int]map[string]uint64
}

func newPositions() *positions {
	return &positions{committed: map[int]map[string]uint64{}, floor: map[int]map[string]uint64{}, ceiling: map[int]map[string]uint64{}}
}

// reset forgets everything: a rebuilt pipeline reads the positions from
// the store again.
func (p *positions) reset() {
	clear(p.committed)
	clear(p.floor)
	clear(p.ceiling)
}

// of returns the committed position of key group kg for reader r.
func (p *positions) of(kg int, r string) uint64 { return p.committed[kg][r] }

// commit records a position as committed.
func (p *positions) commit(kg int, r string, seq uint64) {
	if p.committed[kg] == nil {
		p.committed[kg] = map[string]uint64{}
	}
	p.committed[kg][r] = seq
}

// next returns the position to write for key group kg and reader r at a
// barrier where the reader had delivered up to seq, and whether it is
// past the committed one.
func (p *positions) next(kg int, r string, seq uint64) (uint64, bool) {
	seq = max(seq, p.floor[kg][r])
	if c, ok := p.ceiling[kg][r]; ok {
		seq = min(seq, c)
	}
	return seq, seq > p.committed[kg][r]
}

// moved records move m, committed at a barrier where the readers had
// delivered up to seqs: the key groups that stay (stay) keep what was
// delivered of them as a floor, those whose intake stopped get a ceiling,
// those that left are forgotten, and those that joined start at their
// committed positions.
func (p *positions) moved(m *move, stay []int, seqs map[string]uint64) {
	for _, kg := range stay {
		if p.floor[kg] == nil {
			p.floor[kg] = map[string]uint64{}
		}
		for r, seq := range seqs {
			p.floor[kg][r] = max(p.floor[kg][r], seq)
		}
	}
	for _, kg := range m.stopIntake {
		p.ceiling[kg] = maps.Clone(seqs)
	}
	for _, kg := range m.release {
		delete(p.committed, kg)
		delete(p.floor, kg)
		delete(p.ceiling, kg)
	}
	for kg, pos := range m.start {
		p.committed[kg] = maps.Clone(pos)
		delete(p.floor, kg)
		delete(p.ceiling, kg)
	}
}
