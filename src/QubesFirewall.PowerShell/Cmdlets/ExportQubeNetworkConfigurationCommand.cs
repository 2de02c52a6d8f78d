using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Configuration;
using QubesFirewall.Engine.Io;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Writes the declared network state (per qube: netvm, ipv6 feature, rules, forwards, links, bindings) as a .psd1
/// data file or JSON, sorted and stable; without -Path, the text goes to the pipeline.
/// </summary>
[Cmdlet(VerbsData.Export, "QubeNetworkConfiguration", SupportsShouldProcess = true)]
[OutputType(typeof(string), typeof(FileInfo))]
public sealed class ExportQubeNetworkConfigurationCommand : QubeCmdlet
{
    /// <summary>Only these qubes (wildcards); default every qube but dom0.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string[]? VMName { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Path { get; set; }

    /// <summary>Default: JSON when -Path ends in .json, else the .psd1 data file.</summary>
    [Parameter]
    public ConfigurationFormat? Format { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    private readonly List<WildcardPattern> _patterns = [];
    private bool _invalid;

    protected override void ProcessRecord()
    {
        if (VMName is null) return;
        if (!TryEngine(() => Backend.GetInventory(), out var inventory)) { _invalid = true; return; }
        foreach (var name in VMName)
        {
            if (QubePattern(name, inventory) is { } wildcard) _patterns.Add(wildcard);
            else _invalid = true;
        }
    }

    protected override void EndProcessing()
    {
        if (!_invalid && TryEngine(() => Backend.GetInventory(), out var inventory))
        {
            var warnings = new List<string>();
            Func<string, bool>? filter = _patterns.Count == 0 ? null : name => _patterns.Any(p => p.IsMatch(name));
            if (TryEngine(() => ConfigurationExport.Export(inventory, Backend.GetFirewall, Now, filter, warnings), out var configuration))
            {
                foreach (var warning in warnings) WriteWarning(warning);
                var format = Format ?? (Path is not null ? ConfigurationReader.FormatOf(Path) : ConfigurationFormat.Psd1);
                var text = ConfigurationWriter.Write(configuration, format);
                if (Path is null) WriteObject(text);
                else
                {
                    var target = SessionState.Path.GetUnresolvedProviderPathFromPSPath(Path);
                    if (ShouldProcess(target, $"Write the network configuration of {configuration.Qubes.Count} qube(s)"))
                    {
                        try
                        {
                            AtomicFile.WriteAllText(target, text);
                            if (PassThru) WriteObject(new FileInfo(target));
                        }
                        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                        {
                            WriteError(ToErrorRecord(new QubesFirewallException(ErrorIds.ConfigurationNotWritten, FailureKind.WriteError, $"{target} cannot be written: {ex.Message}", target)));
                        }
                    }
                }
            }
        }
        base.EndProcessing();
    }
}
