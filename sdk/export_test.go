package sdk

import "time"

// WithClock sets the clock a verifying handler checks signature times
// against, for tests.
func WithClock(now func() time.Time) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.now = now })
}
