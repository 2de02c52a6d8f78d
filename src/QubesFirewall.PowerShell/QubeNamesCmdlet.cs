using System.Management.Automation;

namespace QubesFirewall.PowerShell;

/// <summary>A cmdlet that works on the qubes named by -VMName (piped names and qube objects too), one after the other.</summary>
public abstract class QubeNamesCmdlet : QubeCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string[] VMName { get; set; } = [];
}
