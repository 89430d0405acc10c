// A minimal OpenTelemetry Collector for the end-to-end tests (tests/src/otelcol.rs): the core OTLP
// receiver and a file exporter of its own that writes every batch of spans it is handed as one line
// of OTLP JSON, so a test reads back exactly what the server exported. Built by
// tests/env/build-addon.sh otelcol; run as `otelcol --config file:/path/config.yaml` (or `yaml:...`).
//
// The exporter lives here, not in opentelemetry-collector-contrib, so every collector module stays
// at one core release (v0.165.0 / v1.71.0): contrib's fileexporter lags the core and pulls half of
// contrib's dependency graph into the build.
package main

import (
	"context"
	"errors"
	"log"
	"os"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry"
	"go.uber.org/zap"
)

// jsonFileConfig is the exporter's configuration: `exporters: {jsonfile: {path: /some/file}}`.
type jsonFileConfig struct {
	Path string `mapstructure:"path"`
}

func (c *jsonFileConfig) Validate() error {
	if c.Path == "" {
		return errors.New("path must be set")
	}
	return nil
}

// jsonFileExporter appends each batch as one line of OTLP JSON (what ptrace.JSONMarshaler writes,
// the protocol's own JSON encoding, so the reader needs no knowledge of the collector).
type jsonFileExporter struct {
	path string
	mu   sync.Mutex // the receiver may call push from several requests at once
	file *os.File
}

func (e *jsonFileExporter) start(context.Context, component.Host) error {
	f, err := os.OpenFile(e.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	e.file = f
	return err
}

func (e *jsonFileExporter) shutdown(context.Context) error {
	if e.file == nil {
		return nil
	}
	return e.file.Close()
}

// push writes the line with a single unbuffered write: once it returns (and with it the receiver's
// HTTP response), another process reads the whole line. No fsync: the reader is on the same
// machine, the page cache is what it reads, and the file only has to outlive a test.
func (e *jsonFileExporter) push(_ context.Context, td ptrace.Traces) error {
	line, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, err = e.file.Write(append(line, '\n'))
	return err
}

func newJSONFileExporterFactory() exporter.Factory {
	create := func(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Traces, error) {
		e := &jsonFileExporter{path: cfg.(*jsonFileConfig).Path}
		// No queue and no retry (exporterhelper's defaults without options): the receiver answers
		// only after the line is written, so a test never waits on a background flush.
		return exporterhelper.NewTraces(ctx, set, cfg, e.push,
			exporterhelper.WithStart(e.start), exporterhelper.WithShutdown(e.shutdown))
	}
	return exporter.NewFactory(component.MustNewType("jsonfile"),
		func() component.Config { return &jsonFileConfig{} },
		exporter.WithTraces(create, component.StabilityLevelDevelopment))
}

func components() (otelcol.Factories, error) {
	receivers, err := otelcol.MakeFactoryMap(otlpreceiver.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	exporters, err := otelcol.MakeFactoryMap(newJSONFileExporterFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	return otelcol.Factories{
		Receivers: receivers,
		Exporters: exporters,
		Telemetry: newTelemetryFactory(),
	}, nil
}

// newTelemetryFactory gives the collector's own logs to stderr and no internal metrics or traces.
// The stock otelconftelemetry would serve metrics on :8888 (two collectors in parallel tests would
// collide) and links its declarative-configuration SDK with cloud resource detectors and a
// Kubernetes client: 941 packages to build instead of 734, for nothing a test reads.
func newTelemetryFactory() telemetry.Factory {
	return telemetry.NewFactory(func() component.Config { return &struct{}{} },
		telemetry.WithCreateLogger(func(_ context.Context, set telemetry.LoggerSettings, _ component.Config) (*zap.Logger, component.ShutdownFunc, error) {
			logger, err := set.BuildZapLogger(zap.NewProductionConfig())
			return logger, nil, err
		}))
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "otelcol",
			Description: "OpenTelemetry Collector for the celestial tests (OTLP in, JSON lines out)",
			Version:     "0.165.0",
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				// env: the collector's default scheme for `${VAR}` inside a config
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(), yamlprovider.NewFactory(), envprovider.NewFactory(),
				},
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		log.Fatal(err)
	}
}
