package spec

import "github.com/docker/go-units"

// deadLetters reads the deadLetters section.
func (d *decoder) deadLetters(m *Module, r *rawDeadLetters) {
	const at = "deadLetters"
	if r == nil || d.misfits[at] {
		return
	}
	if r.MaxAge != nil {
		m.DeadLetters.MaxAge = d.positiveDuration(*r.MaxAge, at+".maxAge")
	}
	if r.MaxBytes != nil {
		size, err := units.RAMInBytes(*r.MaxBytes)
		switch {
		case err != nil:
			d.errorf(d.lineOf(at+".maxBytes"), at+".maxBytes", "must be a size like 1GiB or 512MiB, got %q", *r.MaxBytes)
		case size < MinDeadLetterMaxBytes:
			d.errorf(d.lineOf(at+".maxBytes"), at+".maxBytes", "must be at least 2MiB, to hold a dead letter of the largest message, got %s", *r.MaxBytes)
		default:
			m.DeadLetters.MaxBytes = size
		}
	}
}
