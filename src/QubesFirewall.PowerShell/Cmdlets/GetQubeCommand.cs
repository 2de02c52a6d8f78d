using System.Management.Automation;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Lists qubes with their network settings.</summary>
[Cmdlet(VerbsCommon.Get, "Qube")]
[OutputType(typeof(Qube))]
public sealed class GetQubeCommand : QubeCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("VMName")]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>Only qubes whose network qube is this one.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(NetworkQubeCompleter))]
    public string? NetVM { get; set; }

    protected override void ProcessRecord()
    {
        var inventory = Backend.GetInventory();
        var patterns = Name is { Length: > 0 } ? Name : ["*"];
        foreach (var pattern in patterns)
        {
            if (NamePattern(pattern) is not { } wildcard) continue;
            // Names first: the live backend then reads only the qubes that match (Get-Qube work: 2 calls, not 1 + every qube).
            var matches = inventory.Names.Where(wildcard.IsMatch).Select(n => inventory.Find(n)!)
                .Where(q => NetVM is null || string.Equals(q.NetVM, NetVM, StringComparison.Ordinal)).ToList();
            if (matches.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(pattern))
            {
                WriteError(ToErrorRecord(Engine.Model.QubesInventory.NotFound(pattern, NetVM is null ? Backend.Description : $"{Backend.Description} whose network qube is '{NetVM}'")));
                continue;
            }
            foreach (var qube in matches) WriteObject(qube);
        }
    }
}
