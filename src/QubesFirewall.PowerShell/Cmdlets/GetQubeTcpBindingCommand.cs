using System.Globalization;
using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Lists the declared qubes.ConnectTCP bindings (the qubesfirewall.tcp.* features of the client qubes).</summary>
[Cmdlet(VerbsCommon.Get, "QubeTcpBinding")]
[OutputType(typeof(QubeTcpBinding))]
public sealed class GetQubeTcpBindingCommand : QubeCmdlet
{
    /// <summary>Client qubes (wildcards); default: all.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name", "VMName")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    public string[]? From { get; set; }

    /// <summary>Only bindings to these target qubes (wildcards).</summary>
    [Parameter]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    public string[]? To { get; set; }

    /// <summary>Only bindings to these ports of the target.</summary>
    [Parameter]
    [ValidateRange(1, 65535)]
    public int[]? Port { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => Backend.GetInventory(), out var inventory)) return;
        var targets = new List<WildcardPattern>();
        foreach (var target in To ?? [])
        {
            if (NamePattern(target) is not { } targetPattern) return;
            targets.Add(targetPattern);
        }
        foreach (var pattern in From is { Length: > 0 } ? From : ["*"])
        {
            if (QubePattern(pattern, inventory) is not { } wildcard) continue;
            foreach (var binding in TcpBindingPlanner.List(inventory, name => wildcard.IsMatch(name)))
            {
                if (targets.Count > 0 && (binding.To is not { } to || !targets.Any(t => t.IsMatch(to)))) continue;
                if (Port is { Length: > 0 } && (binding.Port is not { } p || !Port.Contains(p))) continue;
                if (!binding.IsValid)
                {
                    WriteError(ToErrorRecord(new QubesFirewallException(ErrorIds.InvalidTcpBindingFeature, FailureKind.InvalidData,
                        $"{binding.Problem} Nothing is generated for it. Fix the feature (qvm-features {binding.From} {binding.FeatureName} '...') or remove it: " +
                        $"Remove-QubeTcpBinding -From {binding.From} -To {binding.To ?? "<target>"} -Port {binding.Port?.ToString(CultureInfo.InvariantCulture) ?? "<port>"}.",
                        binding.FeatureName)));
                    continue;
                }
                if (binding.Problem is not null) WriteWarning($"{binding}: {binding.Problem}");
                WriteObject(binding);
            }
        }
    }
}
