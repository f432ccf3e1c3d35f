package datacenter_test

import (
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/examples/datacenter"
	"github.com/twinflow/twinflow/sdk"
)

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(datacenter.EnvDataCenterID, "eu-west")
	t.Setenv(datacenter.EnvSilenceTimeout, "1m")
	t.Setenv(datacenter.EnvWindowSpacing, "")
	c, err := datacenter.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.DataCenterID != "eu-west" || c.SilenceTimeout != time.Minute || c.WindowSpacing != 5*time.Second {
		t.Fatalf("config %+v", c)
	}

	t.Setenv(datacenter.EnvSilenceTimeout, "soon")
	if _, err := datacenter.ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), datacenter.EnvSilenceTimeout) {
		t.Fatalf("err = %v, want one naming %s", err, datacenter.EnvSilenceTimeout)
	}
}

func TestRegisterRejectsBadConfig(t *testing.T) {
	for _, c := range []datacenter.Config{
		{SilenceTimeout: time.Millisecond},
		{WindowSpacing: time.Hour},
		{Health: datacenter.HealthModel{HighCPU: 2}},
		{Correlation: datacenter.CorrelationModel{Share: 1.5}},
	} {
		if err := datacenter.Register(sdk.NewRegistry(), c); err == nil {
			t.Errorf("Register accepted %+v", c)
		}
	}
	if err := datacenter.DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults are invalid: %v", err)
	}
}
