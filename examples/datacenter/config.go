package datacenter

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Config configures the twins. The zero value of a field selects its
// default; [DefaultConfig] returns all defaults filled in.
type Config struct {
	// DataCenterID is the id of the datacenter/datacenter twin that racks
	// report to. Default "dc".
	DataCenterID string
	// SilenceTimeout is how long a server may stay silent before its twin
	// raises NO_REPORTS. It is measured by the runtime's timer from the
	// last report the twin handled. Default 30s.
	SilenceTimeout time.Duration
	// WindowSpacing is the least time between two reports kept in a
	// server's window; a report closer to the previous kept one replaces
	// the newest instead of being added. This bounds the window at
	// WindowLength/WindowSpacing samples whatever the report rate, so the
	// state stays small enough to ship with every call and to read with
	// `twinflow state get`. Default 5s; a negative value keeps every
	// report.
	WindowSpacing time.Duration
	// CorrelationDelay is how long a rack twin waits after a change of its
	// servers' incidents before it correlates them, so that the servers hit
	// by one cause at one moment are reported as one rack incident. Changes
	// during the wait join it; they do not extend it. Default 2s; a negative
	// value correlates at once.
	CorrelationDelay time.Duration
	// Health holds the thresholds of the server health model.
	Health HealthModel
	// Correlation holds the rules of the rack correlation.
	Correlation CorrelationModel
	// Now returns the time of events that no report dates: a server
	// falling silent, a decommissioning. Default time.Now; tests set it.
	Now func() time.Time
}

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		DataCenterID:     "dc",
		SilenceTimeout:   30 * time.Second,
		WindowSpacing:    5 * time.Second,
		CorrelationDelay: 2 * time.Second,
		Health:           DefaultHealthModel(),
		Correlation:      DefaultCorrelationModel(),
		Now:              time.Now,
	}
}

// withDefaults returns c with the zero fields set to their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.DataCenterID == "" {
		c.DataCenterID = d.DataCenterID
	}
	if c.SilenceTimeout == 0 {
		c.SilenceTimeout = d.SilenceTimeout
	}
	if c.WindowSpacing == 0 {
		c.WindowSpacing = d.WindowSpacing
	} else if c.WindowSpacing < 0 {
		c.WindowSpacing = 0
	}
	if c.CorrelationDelay == 0 {
		c.CorrelationDelay = d.CorrelationDelay
	} else if c.CorrelationDelay < 0 {
		c.CorrelationDelay = 0
	}
	c.Health = c.Health.withDefaults()
	c.Correlation = c.Correlation.withDefaults()
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate reports the first setting that cannot work, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.SilenceTimeout < time.Second:
		return fmt.Errorf("SilenceTimeout %v: want at least 1s", c.SilenceTimeout)
	case c.WindowSpacing >= WindowLength:
		return fmt.Errorf("WindowSpacing %v: want less than the window of %v", c.WindowSpacing, WindowLength)
	case c.CorrelationDelay >= c.SilenceTimeout:
		return fmt.Errorf("CorrelationDelay %v: want less than SilenceTimeout %v, or racks lag behind their servers", c.CorrelationDelay, c.SilenceTimeout)
	}
	if err := c.Health.validate(); err != nil {
		return fmt.Errorf("Health: %w", err)
	}
	if err := c.Correlation.validate(); err != nil {
		return fmt.Errorf("Correlation: %w", err)
	}
	return nil
}

// The environment variables [ConfigFromEnv] reads.
const (
	EnvDataCenterID     = "DATACENTER_ID"
	EnvSilenceTimeout   = "DATACENTER_SILENCE_TIMEOUT"
	EnvWindowSpacing    = "DATACENTER_WINDOW_SPACING"
	EnvCorrelationDelay = "DATACENTER_CORRELATION_DELAY"
)

// ConfigFromEnv returns the defaults overridden by the environment:
// DATACENTER_ID, DATACENTER_SILENCE_TIMEOUT, DATACENTER_WINDOW_SPACING and
// DATACENTER_CORRELATION_DELAY (durations such as "30s"). Thresholds of the models are constants of the
// code on purpose: changing them changes what an alert means, which
// deserves a review rather than a deployment flag.
func ConfigFromEnv() (Config, error) {
	c := DefaultConfig()
	if v := os.Getenv(EnvDataCenterID); v != "" {
		c.DataCenterID = v
	}
	var errs []error
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{
		{EnvSilenceTimeout, &c.SilenceTimeout},
		{EnvWindowSpacing, &c.WindowSpacing},
		{EnvCorrelationDelay, &c.CorrelationDelay},
	} {
		v := os.Getenv(d.env)
		if v == "" {
			continue
		}
		x, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d.env, err))
			continue
		}
		*d.dst = x
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}
