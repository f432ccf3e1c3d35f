package datacenter

import (
	"fmt"

	"github.com/twinflow/twinflow/sdk"
)

// Register adds the three twins to reg with the given configuration; zero
// fields of cfg select the defaults (see [DefaultConfig]).
func Register(reg *sdk.Registry, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("datacenter: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := reg.Register(ServerFunction, &serverFun{cfg: cfg}, ServerWindowState, ServerHealthState); err != nil {
		return err
	}
	if err := reg.Register(RackFunction, &rackFun{cfg: cfg}, RackStateSpec); err != nil {
		return err
	}
	return reg.Register(DataCenterFunction, &dataCenterFun{}, UnhealthyRacksState)
}
