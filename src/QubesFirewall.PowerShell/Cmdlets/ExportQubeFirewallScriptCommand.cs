using System.Management.Automation;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Writes the script the module maintains for a qube: the body of its managed block, ready to run as root there.</summary>
[Cmdlet(VerbsData.Export, "QubeFirewallScript")]
[OutputType(typeof(string))]
public sealed class ExportQubeFirewallScriptCommand : QubeNamesCmdlet
{
    protected override void ProcessRecord()
    {
        foreach (var name in VMName)
        {
            var warnings = new List<string>();
            if (!TryEngine(() => PortForwardPlanner.Export(Backend.GetInventory(), name, warnings), out var script)) continue;
            foreach (var w in warnings) WriteVerbose(w);
            if (script is null)
            {
                WriteWarning($"No port forward crosses '{name}' and no inter-qube link concerns it: the module maintains no script there.");
                continue;
            }
            WriteVerbose(script.StoredIn == script.VMName
                ? $"{script.VMName}: the managed block of {script.Path} ({script.Forwards} forward(s))."
                : $"{script.VMName}: the managed block of {script.Path} in {script.StoredIn}, its disposable template ({script.Forwards} forward(s) for {script.VMName}).");
            WriteObject(script.Script);
        }
    }
}
