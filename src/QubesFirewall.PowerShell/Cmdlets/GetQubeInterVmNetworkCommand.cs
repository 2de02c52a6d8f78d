using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Lists the declared inter-qube links (features qubesfirewall.link.* of the source qubes) and whether each of their three parts is in place.</summary>
[Cmdlet(VerbsCommon.Get, "QubeInterVmNetwork")]
[OutputType(typeof(QubeInterVmLink))]
public sealed class GetQubeInterVmNetworkCommand : QubeCmdlet
{
    /// <summary>Source qubes (wildcards); binds from Get-Qube's Name.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name", "VMName")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    public string[]? From { get; set; }

    /// <summary>Only links to these qubes (wildcards).</summary>
    [Parameter(Position = 1)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    public string[]? To { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryEngine(() => Backend.GetInventory(), out var inventory)) return;
        var toPatterns = (To is { Length: > 0 } ? To : ["*"]).Select(NamePattern).ToList();
        if (toPatterns.Any(p => p is null)) return;
        foreach (var pattern in From is { Length: > 0 } ? From : ["*"])
        {
            if (QubePattern(pattern, inventory) is not { } wildcard) continue;
            if (!TryEngine(() => InterVmLinkPlanner.List(inventory, Backend.GetFirewall, Now, wildcard.IsMatch), out var links)) continue;
            foreach (var link in links)
            {
                if (!toPatterns.Any(p => p!.IsMatch(link.To))) continue;
                if (link.Problem is not null) WriteWarning($"{link}: {link.Problem}");
                WriteObject(link);
            }
        }
    }
}
