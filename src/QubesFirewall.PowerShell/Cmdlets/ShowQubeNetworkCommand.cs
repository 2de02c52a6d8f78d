using System.Management.Automation;
using QubesFirewall.Engine.Network;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// The whole network as a tree (sys-net at the root, clients under their netvm, forwards, links, bindings and
/// audit problems marked), or as a Mermaid or Graphviz diagram. One string.
/// </summary>
[Cmdlet(VerbsCommon.Show, "QubeNetwork")]
[OutputType(typeof(string))]
public sealed class ShowQubeNetworkCommand : QubeCmdlet
{
    [Parameter(Position = 0)]
    public NetworkDiagram As { get; set; } = NetworkDiagram.Tree;

    protected override void EndProcessing()
    {
        if (TryEngine(() => NetworkView.Build(new AuditContext(Backend.GetInventory(), Backend.GetFirewall, Now)), out var nodes))
        {
            var text = As switch
            {
                NetworkDiagram.Mermaid => NetworkRenderer.Mermaid(nodes),
                NetworkDiagram.Dot => NetworkRenderer.Dot(nodes),
                _ => NetworkRenderer.Tree(nodes, Plain ? TreeStyle.Plain : TreeStyle.Rich),
            };
            WriteObject(text.TrimEnd('\n'));
        }
        base.EndProcessing();
    }

    /// <summary>
    /// Plain ASCII without colours when the output does not go to a terminal: piped on, redirected, a host without
    /// a console, or <c>$PSStyle.OutputRendering</c> set to PlainText (which NO_COLOR sets too).
    /// </summary>
    private bool Plain
    {
        get
        {
            if (MyInvocation.PipelinePosition < MyInvocation.PipelineLength) return true;
            if (Console.IsOutputRedirected) return true;
            var style = SessionState.PSVariable.GetValue("PSStyle");
            var rendering = style is null ? null : PSObject.AsPSObject(style).Properties["OutputRendering"]?.Value?.ToString();
            if (rendering is null || string.Equals(rendering, "PlainText", StringComparison.OrdinalIgnoreCase)) return true;
            return !string.Equals(Host.Name, "ConsoleHost", StringComparison.Ordinal);
        }
    }
}
